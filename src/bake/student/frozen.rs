//! A linear layer with frozen weights: `y = x·Wᵀ`, differentiable in `x` only.
//!
//! candle's own matmul computes a gradient for both operands, so a plain `x.matmul(&w.t())`
//! would spend as much time on the (discarded) gradient of every frozen weight matrix as on
//! the forward pass itself. Wrapping the product in a custom op whose backward returns only
//! `∂L/∂x = ∂L/∂y · W` makes backpropagation cost one matmul per frozen layer instead of two.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

/// A frozen weight matrix `W` (`out × in`, row-major as ggml stores `[in, out]`).
#[derive(Clone)]
pub struct Frozen {
    w: Tensor,
}

impl Frozen {
    /// Wrap `w` (`out × in`).
    pub fn new(w: Tensor) -> Frozen {
        Frozen { w }
    }

    /// The weight matrix.
    pub fn weight(&self) -> &Tensor {
        &self.w
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
        *out.last_mut().expect("non-scalar") = self.w.dim(0)?;
        y.reshape(out)
    }
}

struct FrozenMatmul {
    w: Tensor,
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
        let y = x.matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn gradient_matches_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [-1., 0.5, 2.]], &dev)?; // 2 × 3
        let x = Var::new(&[[0.3f32, -0.2, 1.0], [2.0, 1.0, -1.0]], &dev)?;
        let f = Frozen::new(w.clone());
        let y = f.forward(x.as_tensor())?;
        let want = x.as_tensor().matmul(&w.t()?)?;
        let diff = (y.clone() - &want)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "forward differs by {diff}");
        // L = Σ y², ∂L/∂x = 2y·W
        let g = y.sqr()?.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).expect("gradient for x");
        let want_g = (want * 2.0)?.matmul(&w)?;
        let diff = (gx - want_g)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "gradient differs by {diff}");
        Ok(())
    }
}
