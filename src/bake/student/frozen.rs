//! A linear layer with frozen weights: `y = x·Wᵀ`, differentiable in `x` only, with `W` kept
//! as the file stores it.
//!
//! The weights stay quantized in memory (the file's own bytes, a Q4 matrix at ~0.56 bytes a
//! value instead of f32's 4) and are dequantized by ggml's codec a band of rows at a time, as
//! the forward or the backward pass reaches them: the model is never held in f32 at once.
//! candle's own matmul computes a gradient for both operands, so the product is a custom op
//! whose backward returns only `∂L/∂x = ∂L/∂y · W`: one matmul per frozen layer, not two.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use gguf::GgmlType;
use std::sync::Arc;

use crate::engine::dequantize;

/// Values dequantized at once: a band of `W`'s rows of at most this many values (32 MiB in f32).
const BAND_VALUES: usize = 1 << 23;

/// A frozen weight matrix `W` (`out × in`, row-major as ggml stores `[in, out]`), quantized.
#[derive(Clone)]
pub struct Frozen {
    w: Arc<Stored>,
}

struct Stored {
    ty: GgmlType,
    data: Vec<u8>,
    rows: usize,
    cols: usize,
    /// bytes of one row
    row_bytes: usize,
}

impl Frozen {
    /// `rows × cols` values of type `ty` in ggml's layout (each row whole blocks).
    pub fn new(ty: GgmlType, data: Vec<u8>, rows: usize, cols: usize) -> Result<Frozen> {
        let Some(row_bytes) = ty.row_bytes(cols as u64).map(|b| b as usize) else {
            candle_core::bail!("rows of {cols} values are not whole {} blocks", ty.name());
        };
        if row_bytes.checked_mul(rows) != Some(data.len()) {
            candle_core::bail!(
                "{rows} rows of {cols} {} values take {} bytes, not {}",
                ty.name(),
                row_bytes * rows,
                data.len()
            );
        }
        Ok(Frozen {
            w: Arc::new(Stored {
                ty,
                data,
                rows,
                cols,
                row_bytes,
            }),
        })
    }

    /// A matrix of f32 values (`rows × cols`, row-major).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Result<Frozen> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Frozen::new(GgmlType::F32, data, rows, cols)
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.w.rows, self.w.cols)
    }

    /// The storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.w.ty
    }

    /// The whole matrix in f32 (`out × in`).
    pub fn dequantized(&self) -> Result<Tensor> {
        self.w.band(0, self.w.rows)
    }

    /// Rows `first..first + n` in f32 (`n × in`).
    pub fn band(&self, first: usize, n: usize) -> Result<Tensor> {
        if first.checked_add(n).is_none_or(|end| end > self.w.rows) {
            candle_core::bail!(
                "rows {first}..{} of a matrix of {} rows",
                first.saturating_add(n),
                self.w.rows
            );
        }
        self.w.band(first, n)
    }

    /// The bands `(first row, rows)` the matrix is dequantized in, each of at most 2²³
    /// values (32 MiB in f32), covering every row in order.
    pub fn bands(&self) -> Vec<(usize, usize)> {
        self.w.bands().collect()
    }

    /// Rows `ids` in f32 (`ids.len() × in`): the embeddings of those tokens.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let s = &self.w;
        let mut out = Vec::with_capacity(ids.len() * s.cols);
        for &id in ids {
            let r = id as usize;
            if r >= s.rows {
                candle_core::bail!("row {r} of a matrix of {} rows", s.rows);
            }
            let bytes = &s.data[r * s.row_bytes..(r + 1) * s.row_bytes];
            out.extend(dequantize(s.ty, bytes, s.cols as u64).map_err(candle_core::Error::wrap)?);
        }
        Tensor::from_vec(out, (ids.len(), s.cols), &Device::Cpu)
    }

    /// `x·Wᵀ` for `x` of shape `(…, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let n_in = *dims.last().expect("non-scalar input");
        let rows = x.elem_count() / n_in;
        let y = x
            .contiguous()?
            .reshape((rows, n_in))?
            .apply_op1(FrozenMatmul { w: self.w.clone() })?;
        let mut out = dims;
        *out.last_mut().expect("non-scalar") = self.w.rows;
        y.reshape(out)
    }
}

impl Stored {
    /// Rows `first..first + n` in f32.
    fn band(&self, first: usize, n: usize) -> Result<Tensor> {
        let bytes = &self.data[first * self.row_bytes..(first + n) * self.row_bytes];
        let v =
            dequantize(self.ty, bytes, (n * self.cols) as u64).map_err(candle_core::Error::wrap)?;
        Tensor::from_vec(v, (n, self.cols), &Device::Cpu)
    }

    /// The bands `(first, n)` the matrix is dequantized in.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let per = (BAND_VALUES / self.cols.max(1)).max(1);
        (0..self.rows)
            .step_by(per)
            .map(move |r| (r, per.min(self.rows - r)))
    }
}

struct FrozenMatmul {
    w: Arc<Stored>,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = storage else {
            candle_core::bail!("frozen-matmul takes f32 input");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul takes contiguous input");
        };
        let x = Tensor::from_slice(&v[a..b], layout.shape(), &Device::Cpu)?;
        let parts = self
            .w
            .bands()
            .map(|(first, n)| x.matmul(&self.w.band(first, n)?.t()?))
            .collect::<Result<Vec<_>>>()?;
        let y = if parts.len() == 1 {
            parts.into_iter().next().expect("one band")
        } else {
            Tensor::cat(&parts, 1)?
        };
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mut dx: Option<Tensor> = None;
        for (first, n) in self.w.bands() {
            let part = grad.narrow(1, first, n)?.matmul(&self.w.band(first, n)?)?;
            dx = Some(match dx {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
        dx.map(Some)
            .ok_or_else(|| candle_core::Error::Msg("an empty frozen matrix".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantize;
    use candle_core::Var;

    /// `y` and `∂(Σ y²)/∂x` through `f`, against the plain matmul with `w` (`out × in`).
    fn check(f: &Frozen, w: &Tensor, x: &Var) -> Result<()> {
        let y = f.forward(x.as_tensor())?;
        let want = x.as_tensor().matmul(&w.t()?)?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (y.clone() - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-5 * scale, "forward differs by {diff}");
        // L = Σ y², ∂L/∂x = 2y·W
        let g = y.sqr()?.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).expect("gradient for x");
        let want_g = (want * 2.0)?.matmul(w)?;
        let scale = want_g.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (gx - want_g)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-5 * scale, "gradient differs by {diff}");
        Ok(())
    }

    #[test]
    fn gradient_matches_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [-1., 0.5, 2.]], &dev)?; // 2 × 3
        let x = Var::new(&[[0.3f32, -0.2, 1.0], [2.0, 1.0, -1.0]], &dev)?;
        let f = Frozen::from_f32(&w.flatten_all()?.to_vec1()?, 2, 3)?;
        check(&f, &w, &x)
    }

    #[test]
    fn a_quantized_matrix_in_bands_has_the_gradient_of_its_dequantized_values() -> Result<()> {
        // Q4_K, 32 768 values a row: 513 rows make two bands of 256 and one of 1, so the
        // banded forward, the banded backward and the uneven last band are all exercised.
        let (rows, cols) = (513, 1 << 15);
        let mut s = 1u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        let q =
            quantize(GgmlType::Q4_K, &w, cols as u64, None).map_err(candle_core::Error::wrap)?;
        let f = Frozen::new(GgmlType::Q4_K, q, rows, cols)?;
        assert!(
            f.w.bands().count() == 3,
            "{:?}",
            f.w.bands().collect::<Vec<_>>()
        );
        let deq = f.dequantized()?;
        let err = (deq.clone() - Tensor::from_vec(w, (rows, cols), &Device::Cpu)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(
            err > 1e-3 && err < 0.1,
            "Q4_K should round, a little: {err}"
        );
        let xv: Vec<f32> = (0..3 * cols).map(|_| next()).collect();
        let x = Var::from_vec(xv, (3, cols), &Device::Cpu)?;
        check(&f, &deq, &x)?;
        let r = f.rows(&[512, 0])?;
        let want = Tensor::cat(&[deq.narrow(0, 512, 1)?, deq.narrow(0, 0, 1)?], 0)?;
        let diff = (r - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff == 0.0, "rows differ by {diff}");
        assert!(f.rows(&[513]).is_err());
        Ok(())
    }
}
