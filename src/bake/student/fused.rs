//! The student's row-wise operations as single fused passes, each with its own backward.
//!
//! Built from candle's primitives, an RMSNorm is five tensor ops forward and about a dozen
//! backward, a masked softmax six, a rotary embedding ten; on two cores those element-wise
//! passes (each a fresh buffer the kernel must zero) cost more than the matrix products. Here
//! each is one pass over its rows forward and one backward, in parallel over rows:
//! - [`rms_norm`]: `y = x / √(mean(x²) + ε) · w`, `w` frozen;
//! - [`causal_softmax`]: `p = softmax(s·scale)` over the keys a query may see (row `r` is
//!   position `r mod t`, so several query heads that share one key head can be stacked);
//! - [`rope`]: rotary embeddings, adjacent pairs (llama.cpp's normal mode) or halves (NeoX),
//!   whose backward is the rotation by the opposite angle.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::Arc;

/// The contiguous f32 values of a storage and the length of their rows (the last
/// dimension), or an error naming `op`.
fn rows<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op} takes f32");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous input");
    };
    Ok((&v[a..b], l.shape().dims().last().copied().unwrap_or(1)))
}

/// Rows of `n` values: fill `out` row by row from the matching rows of the inputs, in parallel.
fn by_rows(
    n: usize,
    inputs: [&[f32]; 2],
    len: usize,
    f: impl Fn(usize, &[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; len];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .with_min_len(16)
        .for_each(|(r, o)| f(r, row(inputs[0], r, n), row(inputs[1], r, n), o));
    out
}

/// Row `r` of `n` values of `v`; empty when `v` is (an unused input).
fn row(v: &[f32], r: usize, n: usize) -> &[f32] {
    if v.is_empty() {
        v
    } else {
        &v[r * n..(r + 1) * n]
    }
}

/// `x / √(mean(x²) + ε) · w` over the last dimension, differentiable in `x` (`w` frozen).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let w = Arc::new(w.to_vec1::<f32>()?);
    if x.dim(D::Minus1)? != w.len() {
        candle_core::bail!("rms-norm: {:?} against a weight of {}", x.shape(), w.len());
    }
    x.contiguous()?.apply_op1(RmsNorm { w, eps: eps as f32 })
}

#[derive(Clone)]
struct RmsNorm {
    w: Arc<Vec<f32>>,
    eps: f32,
}

impl RmsNorm {
    fn inv_rms(&self, x: &[f32]) -> f32 {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, n) = rows(self.name(), s, l)?;
        let y = by_rows(n, [x, &[]], x.len(), |_, x, _, y| {
            let r = self.inv_rms(x);
            for ((y, x), w) in y.iter_mut().zip(x).zip(self.w.iter()) {
                *y = x * r * w;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let grad = RmsNormGrad(self.clone());
        Ok(Some(g.contiguous()?.apply_op2_no_bwd(x, &grad)?))
    }
}

/// `∂L/∂x = r·(g⊙w) − x·r³·⟨g⊙w, x⟩/n` per row, with `r = 1/√(mean(x²) + ε)`.
struct RmsNormGrad(RmsNorm);

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, _) = rows(self.name(), s1, l1)?;
        let (x, n) = rows(self.name(), s2, l2)?;
        let norm = &self.0;
        let dx = by_rows(n, [g, x], x.len(), |_, g, x, dx| {
            let r = norm.inv_rms(x);
            let dot: f32 = g
                .iter()
                .zip(x)
                .zip(norm.w.iter())
                .map(|((g, x), w)| g * w * x)
                .sum();
            let c = r * r * r * dot / n as f32;
            for (((d, g), x), w) in dx.iter_mut().zip(g).zip(x).zip(norm.w.iter()) {
                *d = r * g * w - c * x;
            }
        });
        Ok((CpuStorage::F32(dx), l2.shape().clone()))
    }
}

/// `softmax(s·scale)` over the last dimension (`t` keys), row `r` seeing keys `0..=r mod t`
/// (a causal mask; the rest get probability 0). `s`: `(…, rows, t)`; `scale` > 0.
pub fn causal_softmax(s: &Tensor, scale: f64) -> Result<Tensor> {
    s.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
    })
}

struct CausalSoftmax {
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, t) = rows(self.name(), s, l)?;
        let p = by_rows(t, [x, &[]], x.len(), |r, x, _, p| {
            let seen = r % t + 1;
            let max = x[..seen].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for (p, &x) in p[..seen].iter_mut().zip(x) {
                *p = ((x - max) * self.scale).exp();
                sum += *p;
            }
            for p in &mut p[..seen] {
                *p /= sum;
            }
        });
        Ok((CpuStorage::F32(p), l.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, p: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let grad = SoftmaxGrad { scale: self.scale };
        Ok(Some(g.contiguous()?.apply_op2_no_bwd(p, &grad)?))
    }
}

/// `∂L/∂s = scale · p ⊙ (g − ⟨g, p⟩)` per row.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, _) = rows(self.name(), s1, l1)?;
        let (p, t) = rows(self.name(), s2, l2)?;
        let ds = by_rows(t, [g, p], p.len(), |_, g, p, ds| {
            let dot: f32 = g.iter().zip(p).map(|(g, p)| g * p).sum();
            for ((d, g), p) in ds.iter_mut().zip(g).zip(p) {
                *d = self.scale * p * (g - dot);
            }
        });
        Ok((CpuStorage::F32(ds), l2.shape().clone()))
    }
}

/// The rotary angles' cos and sin, `pos · base^(−2i/hd)` for positions `0..t` and pairs
/// `0..hd/2`, row-major: built once per forward pass and base, shared by every layer using it.
#[derive(Clone)]
pub struct RopeTables {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    t: usize,
    half: usize,
}

impl RopeTables {
    /// The tables for `t` positions, head size `hd`, base `base`; pair `i`'s frequency is
    /// divided by `factors[i]` where given (ggml's `freq_factors`, Llama 3's `rope_freqs`).
    pub fn new(t: usize, hd: usize, base: f64, factors: Option<&[f32]>) -> RopeTables {
        let half = hd / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in 0..t {
            for i in 0..half {
                let ff = factors
                    .and_then(|f| f.get(i))
                    .map_or(1.0, |&f| f64::from(f));
                let theta = p as f64 * base.powf(-2.0 * i as f64 / hd as f64) / ff;
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        RopeTables {
            cos: Arc::new(cos),
            sin: Arc::new(sin),
            t,
            half,
        }
    }
}

/// Rotary embeddings on `x` (`(b, heads, t, hd)`): adjacent pairs `(2i, 2i+1)` (llama.cpp's
/// normal mode), or with `neox` the halves `(i, i + hd/2)`.
pub fn rope(x: &Tensor, tables: &RopeTables, neox: bool) -> Result<Tensor> {
    let (_, _, t, hd) = x.dims4()?;
    if (tables.t, tables.half) != (t, hd / 2) {
        candle_core::bail!(
            "rope: tables for {} positions of {} pairs, input {:?}",
            tables.t,
            tables.half,
            x.shape()
        );
    }
    x.contiguous()?.apply_op1(Rope {
        tables: tables.clone(),
        neox,
        sign: 1.0,
    })
}

#[derive(Clone)]
struct Rope {
    tables: RopeTables,
    neox: bool,
    /// `−1`: rotate by the opposite angle (the backward)
    sign: f32,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, hd) = rows(self.name(), s, l)?;
        let RopeTables { cos, sin, t, half } = &self.tables;
        let half = *half;
        let y = by_rows(hd, [x, &[]], x.len(), |r, x, _, y| {
            let p = r % t;
            let (cos, sin) = (
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
            );
            for i in 0..half {
                let (a, b) = if self.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (c, s) = (cos[i], self.sign * sin[i]);
                y[a] = x[a] * c - x[b] * s;
                y[b] = x[a] * s + x[b] * c;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope {
            sign: -self.sign,
            ..self.clone()
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
        let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < tol, "differs by {d}");
        Ok(())
    }

    fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    /// The fused op and its reference from candle primitives agree in value and in the
    /// gradient of `Σ y·c` for a fixed random `c`.
    fn agree(
        x: &Tensor,
        fused: impl Fn(&Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let v = Var::from_tensor(x)?;
        let (yf, yr) = (fused(v.as_tensor())?, reference(v.as_tensor())?);
        close(&yf, &yr, 1e-5)?;
        let c = random(yf.dims(), 99)?;
        let gf = (yf * &c)?.sum_all()?.backward()?;
        let gr = (yr * &c)?.sum_all()?.backward()?;
        close(
            gf.get(v.as_tensor()).expect("fused gradient"),
            gr.get(v.as_tensor()).expect("reference gradient"),
            1e-4,
        )
    }

    #[test]
    fn rms_norm_matches_its_primitive_form() -> Result<()> {
        let w = random(&[8], 2)?;
        agree(
            &random(&[3, 5, 8], 1)?,
            |x| rms_norm(x, &w, 1e-5),
            |x| {
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(ms + 1e-5)?.sqrt()?)?.broadcast_mul(&w)
            },
        )
    }

    #[test]
    fn causal_softmax_matches_a_masked_softmax() -> Result<()> {
        let t = 4;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
        // two stacked heads: rows 0..4 and 4..8 are positions 0..4 again
        agree(
            &(random(&[2, 2 * t, t], 3)? * 3.0)?,
            |s| causal_softmax(s, 0.5),
            |s| {
                let s = (s.reshape((2, 2, t, t))? * 0.5)?.broadcast_add(&mask)?;
                let max = s.max_keepdim(D::Minus1)?.detach();
                let e = s.broadcast_sub(&max)?.exp()?;
                e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
                    .reshape((2, 2 * t, t))
            },
        )
    }

    #[test]
    fn rope_matches_its_primitive_forms() -> Result<()> {
        let (t, hd) = (3, 8);
        let tables = RopeTables::new(t, hd, 10.0, None);
        let cos = Tensor::from_slice(&tables.cos, (t, hd / 2), &Device::Cpu)?;
        let sin = Tensor::from_slice(&tables.sin, (t, hd / 2), &Device::Cpu)?;
        let x = random(&[2, 3, t, hd], 6)?;
        agree(
            &x,
            |x| rope(x, &tables, false),
            |x| {
                let x = x.reshape((2, 3, t, hd / 2, 2))?;
                let (x0, x1) = (x.narrow(4, 0, 1)?, x.narrow(4, 1, 1)?);
                let c = cos.reshape((t, hd / 2, 1))?;
                let s = sin.reshape((t, hd / 2, 1))?;
                let r0 = (x0.broadcast_mul(&c)? - x1.broadcast_mul(&s)?)?;
                let r1 = (x0.broadcast_mul(&s)? + x1.broadcast_mul(&c)?)?;
                Tensor::cat(&[r0, r1], 4)?.reshape((2, 3, t, hd))
            },
        )?;
        agree(
            &x,
            |x| rope(x, &tables, true),
            |x| {
                let (x0, x1) = (x.narrow(3, 0, hd / 2)?, x.narrow(3, hd / 2, hd / 2)?);
                let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
                let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
                Tensor::cat(&[r0, r1], 3)
            },
        )
    }

    #[test]
    fn rope_rotates_each_pair_by_its_angle() -> Result<()> {
        // One head of size 4 at position 1, base 1: pair 0 turns by 1 rad, pair 1 by 1^(-1/2)=1.
        let x = Tensor::new(&[0f32, 0., 0., 0., 1., 0., 0., 1.], &Device::Cpu)?
            .reshape((1, 1, 2, 4))?;
        let y = rope(&x, &RopeTables::new(2, 4, 1.0, None), false)?
            .narrow(2, 1, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (c, s) = (1f32.cos(), 1f32.sin());
        let want = [c, s, -s, c];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
        Ok(())
    }
}
