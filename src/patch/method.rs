//! The least-squares methods: what each fits per layer (features → targets, from the aligned
//! prompted and unprompted activations) and which tensor edits a solution becomes.
//!
//! - `vector` (thought vector): the mean change of the residual after attention, as a bias where
//!   the architecture has one (`attn_output.bias`, llama family).
//! - `cvec` (control vector): the same at the block output, as `ffn_down.bias` (llama family),
//!   which is exactly where llama.cpp adds a control vector (`--emit cvec`).
//! - `matrix` (thought matrix, input side): `Δ` with `Δ·a ≈ t − a` on the MLP input after its
//!   norm, applied as `W_up ← W_up(I+Δ)`, `W_gate ← W_gate(I+Δ)`.
//! - `down` (output side): `ΔW_down·h + b ≈` the change of the block output, with the MLP hidden
//!   activations `h` as features (and `ffn_down.bias` as `b` where the architecture takes one).
//!
//! In parallel mode every layer is fitted on the unpatched model, so a residual-stream target is
//! the layer's own increment (the prompted−unprompted difference after the layer minus the one
//! before it); in sequential mode the earlier layers are already patched and the target is the
//! whole remaining difference.

use anyhow::{bail, Result};
use ndarray::{Array2, ArrayView2};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::facts::Arch;
use super::ridge::{Ridge, Solution};
use crate::capture::{Kind, Matrix};
use crate::store::rounding::Hessian;
use crate::store::{Change, Delta};

/// Aligned rows of one run: (kind, layer) → `[aligned tokens × width]`.
pub type Rows = BTreeMap<(Kind, usize), Matrix>;

/// A patching method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// value-bias correction (Ye 2025, eq. 10)
    Sleep,
    /// thought vector: residual bias after attention
    Vector,
    /// control vector: residual bias at the block output
    Cvec,
    /// thought matrices on the MLP input (`W_up`, `W_gate`)
    Matrix,
    /// output-side least squares on `W_down` (+ `ffn_down.bias`)
    Down,
}

impl Method {
    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Sleep => "sleep",
            Method::Vector => "vector",
            Method::Cvec => "cvec",
            Method::Matrix => "matrix",
            Method::Down => "down",
        }
    }

    /// Whether the architecture's graph gives the method somewhere to put its edits.
    pub fn check(self, arch: &Arch) -> Result<()> {
        if matches!(self, Method::Vector | Method::Cvec) && !arch.has_out_biases {
            bail!(
                "{} applies no bias after attention, so a thought vector has nowhere to go: \
                 use `method` down (it fits the same shift into W_down) or matrix",
                arch.name
            );
        }
        Ok(())
    }
}

/// Kinds captured from each run for `method` at one layer (plus `BlockOut` of the layer before
/// in parallel mode).
pub fn kinds(method: Method, arch: &Arch) -> (Vec<Kind>, Vec<Kind>) {
    match method {
        Method::Vector => (
            vec![Kind::Resid, Kind::BlockOut],
            vec![Kind::Resid, Kind::BlockOut],
        ),
        Method::Cvec => (vec![Kind::BlockOut], vec![Kind::BlockOut]),
        Method::Matrix => (vec![Kind::MlpIn], vec![Kind::MlpIn]),
        Method::Down => {
            let mut u = vec![Kind::MlpHidden, Kind::BlockOut];
            if !arch.ffn_post_norm.is_empty() {
                u.push(Kind::MlpOut);
            }
            (vec![Kind::BlockOut], u)
        }
        Method::Sleep => (vec![Kind::AttnProbs, Kind::Value], vec![Kind::Value]),
    }
}

/// The ridge problem of one layer.
pub fn problem(method: Method, arch: &Arch) -> Ridge {
    match method {
        Method::Vector | Method::Cvec => Ridge::new(0, arch.n_embd, true),
        Method::Matrix => Ridge::new(arch.n_embd, arch.n_embd, false),
        Method::Down => Ridge::new(arch.n_ff, arch.n_embd, arch.has_out_biases),
        Method::Sleep => unreachable!("sleep is not a least-squares method"),
    }
}

/// Add one conversation's aligned rows of layer `l` to its problem, row `r` counted
/// `weights[r]` times (every row once where `weights` is empty).
#[allow(clippy::too_many_arguments)]
pub fn add_rows(
    method: Method,
    arch: &Arch,
    l: usize,
    p: &Rows,
    u: &Rows,
    parallel: bool,
    weights: &[f32],
    ridge: &mut Ridge,
    validation: bool,
) -> Result<()> {
    let w = |r: usize| weights.get(r).copied().unwrap_or(1.0);
    let prev_diff = |r: usize, t: &mut [f32]| -> Result<()> {
        if parallel && l > 0 {
            let (pp, uu) = (
                get(p, Kind::BlockOut, l - 1)?,
                get(u, Kind::BlockOut, l - 1)?,
            );
            for (i, v) in t.iter_mut().enumerate() {
                *v -= pp.row(r)[i] - uu.row(r)[i];
            }
        }
        Ok(())
    };
    match method {
        Method::Vector => {
            let (pr, ur) = (get(p, Kind::Resid, l)?, get(u, Kind::Resid, l)?);
            for r in 0..pr.rows {
                let mut t: Vec<f32> = diff(pr.row(r), ur.row(r));
                prev_diff(r, &mut t)?;
                ridge.add_weighted(&[], &t, w(r), validation);
            }
        }
        Method::Cvec => {
            let (po, uo) = (get(p, Kind::BlockOut, l)?, get(u, Kind::BlockOut, l)?);
            for r in 0..po.rows {
                let mut t: Vec<f32> = diff(po.row(r), uo.row(r));
                prev_diff(r, &mut t)?;
                ridge.add_weighted(&[], &t, w(r), validation);
            }
        }
        Method::Matrix => {
            let (pr, ur) = (get(p, Kind::MlpIn, l)?, get(u, Kind::MlpIn, l)?);
            for r in 0..pr.rows {
                ridge.add_weighted(ur.row(r), &diff(pr.row(r), ur.row(r)), w(r), validation);
            }
        }
        Method::Down => {
            let (po, uo, h) = (
                get(p, Kind::BlockOut, l)?,
                get(u, Kind::BlockOut, l)?,
                get(u, Kind::MlpHidden, l)?,
            );
            let pre = if arch.ffn_post_norm.is_empty() {
                None
            } else {
                Some(get(u, Kind::MlpOut, l)?)
            };
            for r in 0..po.rows {
                let mut t = diff(po.row(r), uo.row(r));
                prev_diff(r, &mut t)?;
                if let Some(y) = pre {
                    // Through the post-MLP RMS norm, linearised: dy ≈ d(norm(y)) · rms(y) / w.
                    // Channels the norm nearly closes (|w| under a tenth of the mean) are left
                    // alone: the block cannot move them without a huge weight change.
                    let y = y.row(r);
                    let rms = (y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32 + 1e-6).sqrt();
                    let w = &arch.ffn_post_norm[l];
                    let floor = 0.1 * w.iter().map(|v| v.abs()).sum::<f32>() / w.len() as f32;
                    for (v, &wi) in t.iter_mut().zip(w) {
                        *v = if wi.abs() > floor { *v * rms / wi } else { 0.0 };
                    }
                }
                ridge.add_weighted(h.row(r), &t, w(r), validation);
            }
        }
        Method::Sleep => unreachable!("sleep is not a least-squares method"),
    }
    Ok(())
}

fn get(rows: &Rows, k: Kind, layer: usize) -> Result<&Matrix> {
    rows.get(&(k, layer))
        .ok_or_else(|| anyhow::anyhow!("internal: {k:?} of layer {layer} was not captured"))
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// Source weights a method's edits are computed from (shared by layers solved at once).
pub trait Weights: Sync {
    /// Dequantized `ne1 × ne0` matrix of a tensor.
    fn matrix(&self, name: &str) -> Result<Array2<f32>>;
}

/// The tensor edits of a solved layer. `grams` (the problem's feature Gram over all rows and over
/// the validation rows, intercept last where it has one) go with the edited matrices, which
/// `search` rounds to keep the layer's output (else the output error is only measured).
pub fn deltas(
    method: Method,
    l: usize,
    sol: &Solution,
    importance: Vec<f32>,
    grams: (Array2<f32>, Array2<f32>),
    search: bool,
    weights: &dyn Weights,
) -> Result<Vec<Delta>> {
    let b: Vec<f32> = sol.b.to_vec();
    let bias_nonzero = b.iter().any(|&v| v != 0.0);
    let m = &sol.w; // d × m
    let (gram, val) = grams;
    let with_intercept = gram.nrows() > m.nrows();
    let hessian = |bias| {
        Arc::new(Hessian {
            gram,
            val: Some(val),
            bias,
            search,
        })
    };
    Ok(match method {
        Method::Vector => vec![Delta::Bias {
            tensor: format!("blk.{l}.attn_output.bias"),
            after: format!("blk.{l}.attn_output.weight"),
            values: b,
        }],
        Method::Cvec => vec![Delta::Bias {
            tensor: format!("blk.{l}.ffn_down.bias"),
            after: format!("blk.{l}.ffn_down.weight"),
            values: b,
        }],
        Method::Matrix => {
            // Δ = Mᵀ, so W(I+Δ) − W = W·Mᵀ.
            let hessian = hessian(None);
            let mut out = Vec::new();
            for which in ["ffn_up", "ffn_gate"] {
                let name = format!("blk.{l}.{which}.weight");
                let w = weights.matrix(&name)?;
                let delta = w.dot(&m.t());
                out.push(matrix_delta(
                    name,
                    delta.view(),
                    Some(importance.clone()),
                    Some(hessian.clone()),
                ));
            }
            out
        }
        Method::Down => {
            // ΔW_down = Mᵀ (n_embd × n_ff). With an intercept, the bias takes the rounding's mean.
            let name = format!("blk.{l}.ffn_down.weight");
            let bias = with_intercept.then(|| {
                (
                    format!("blk.{l}.ffn_down.bias"),
                    format!("blk.{l}.ffn_down.weight"),
                )
            });
            let hessian = Some(hessian(bias));
            let mut out = vec![matrix_delta(name, m.t(), Some(importance), hessian)];
            if bias_nonzero {
                out.push(Delta::Bias {
                    tensor: format!("blk.{l}.ffn_down.bias"),
                    after: format!("blk.{l}.ffn_down.weight"),
                    values: b,
                });
            }
            out
        }
        Method::Sleep => unreachable!("sleep is not a least-squares method"),
    })
}

fn matrix_delta(
    tensor: String,
    d: ArrayView2<f32>,
    importance: Option<Vec<f32>>,
    hessian: Option<Arc<Hessian>>,
) -> Delta {
    Delta::Matrix {
        tensor,
        delta: Change::Dense(d.iter().copied().collect()),
        importance,
        hessian,
    }
}
