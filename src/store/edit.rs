//! Edits to tensors and how they become a new GGUF: biases added (or created as F32), matrix
//! deltas added to the dequantized weight and requantized with ggml's codec.

use anyhow::{bail, Context as _, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use gguf::{Edits, GgmlType, GgufFile, NewTensor};

use super::rounding::{self, Hessian};
use crate::engine::{dequantize, quantize};

/// One edit to one tensor.
#[derive(Debug, Clone)]
pub enum Delta {
    /// Add `values` to a 1-D F32 bias, created (zero) where the file has none.
    Bias {
        /// tensor name, e.g. `blk.3.ffn_down.bias`
        tensor: String,
        /// the tensor a created bias is placed after, e.g. `blk.3.ffn_down.weight`
        after: String,
        /// values to add
        values: Vec<f32>,
    },
    /// Add a dense delta to a 2-D weight, rows in ggml order (`n_rows = ne1`, `ne0` per row).
    Matrix {
        /// tensor name
        tensor: String,
        /// the change, `ne1 × ne0`
        delta: Change,
        /// per-column importance (mean squared input), for requantization
        importance: Option<Vec<f32>>,
        /// the Gram of the matrix's inputs: round to keep the layer's output
        /// ([`rounding`]) instead of each weight to its nearest grid value
        hessian: Option<Arc<Hessian>>,
    },
}

impl Delta {
    /// The tensor this edit touches.
    pub fn tensor(&self) -> &str {
        match self {
            Delta::Bias { tensor, .. } | Delta::Matrix { tensor, .. } => tensor,
        }
    }
}

/// A matrix's change: dense, or a low-rank product kept factored until the matrix is stored,
/// so that a model's worth of `B·A` never lies in memory at once.
#[derive(Debug, Clone)]
pub enum Change {
    /// row-major values, `ne1 × ne0`
    Dense(Vec<f32>),
    /// `B·A` with `B` row-major `rows × rank` and `A` row-major `rank × cols`
    Product {
        /// `rows × rank`
        b: Vec<f32>,
        /// `rank × cols`
        a: Vec<f32>,
        /// the inner dimension
        rank: usize,
    },
}

impl Change {
    /// The change's values times `scale`, row-major.
    pub fn scaled(&self, scale: f32) -> Result<Vec<f32>> {
        match self {
            Change::Dense(v) => Ok(v.iter().map(|x| x * scale).collect()),
            Change::Product { b, a, rank } => {
                let rank = *rank;
                if rank == 0 || b.len() % rank != 0 || a.len() % rank != 0 {
                    bail!(
                        "a low-rank change of rank {rank} has factors of {} and {} values",
                        b.len(),
                        a.len()
                    );
                }
                let b = ndarray::ArrayView2::from_shape((b.len() / rank, rank), b)?;
                let a = ndarray::ArrayView2::from_shape((rank, a.len() / rank), a)?;
                let mut d = b.dot(&a);
                d.mapv_inplace(|x| x * scale);
                Ok(d.into_raw_vec_and_offset().0)
            }
        }
    }

    /// The sum of two changes of one matrix: products of the same row count stack their
    /// factors, anything else becomes dense.
    fn plus(self, other: &Change) -> Result<Change> {
        Ok(match (self, other) {
            (
                Change::Product { b, a, rank },
                Change::Product {
                    b: b2,
                    a: a2,
                    rank: r2,
                },
            ) if b.len() / rank == b2.len() / r2 => {
                let rows = b.len() / rank;
                let mut bb = Vec::with_capacity(rows * (rank + r2));
                for i in 0..rows {
                    bb.extend_from_slice(&b[i * rank..(i + 1) * rank]);
                    bb.extend_from_slice(&b2[i * r2..(i + 1) * r2]);
                }
                let mut aa = a;
                aa.extend_from_slice(a2);
                Change::Product {
                    b: bb,
                    a: aa,
                    rank: rank + r2,
                }
            }
            (mine, other) => {
                let mut d = mine.scaled(1.0)?;
                let o = other.scaled(1.0)?;
                if d.len() != o.len() {
                    bail!(
                        "two changes of one matrix have {} and {} values",
                        d.len(),
                        o.len()
                    );
                }
                d.iter_mut().zip(&o).for_each(|(x, y)| *x += y);
                Change::Dense(d)
            }
        })
    }
}

/// How edited weight matrices are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EditType {
    /// the tensor's original type (requantized)
    Same,
    /// Q8_0
    Q8_0,
    /// F16
    F16,
    /// F32
    F32,
}

impl EditType {
    /// The stored type of a matrix whose original type is `original`.
    pub fn resolve(self, original: GgmlType) -> GgmlType {
        match self {
            EditType::Same => original,
            EditType::Q8_0 => GgmlType::Q8_0,
            EditType::F16 => GgmlType::F16,
            EditType::F32 => GgmlType::F32,
        }
    }

    /// The name recorded in `sleep.edit_type`.
    pub fn name(self) -> &'static str {
        match self {
            EditType::Same => "same",
            EditType::Q8_0 => "q8_0",
            EditType::F16 => "f16",
            EditType::F32 => "f32",
        }
    }
}

/// What happened to one edited tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorReport {
    /// tensor name
    pub name: String,
    /// stored type
    pub ggml_type: String,
    /// ‖Δ‖ (after strength)
    pub delta_norm: f64,
    /// ‖W‖ of the original (dequantized) tensor, 0 for a created bias
    pub weight_norm: f64,
    /// ‖Q(W+Δ) − Q(W)‖ / ‖Δ‖: 1 when the stored change has the edit's size
    pub stored_ratio: f64,
    /// cosine between the stored change and Δ: 1 when the edit survived requantization
    pub stored_cos: f64,
    /// the same on the layer's output over the calibration inputs (`⟨A,B⟩ = tr(A·H·Bᵀ)`), the
    /// bias correction included; where the inputs' Gram is at hand
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_cos: Option<f64>,
    /// `‖Q(W+Δ) − W − Δ‖_H / ‖Δ‖_H`: the stored change's error on the layer's output, relative
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<f64>,
    /// output-aware rounding: weights rounded away from their nearest grid value, and the
    /// damping chosen on the validation rows (`None`: nearest rounding kept)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounding: Option<RoundingReport>,
}

/// What output-aware rounding did to one matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundingReport {
    /// weights rounded away from their nearest grid value
    pub moved: usize,
    /// the damping chosen (relative to the mean input power); `None`: nearest rounding kept
    pub damp: Option<f64>,
    /// chosen weights the codec did not store as chosen (their blocks stored as nearest)
    pub mismatched: usize,
}

/// Sum edits that touch the same tensor; an edit alone on its tensor is borrowed, not copied.
pub fn merge(deltas: &[Delta]) -> Result<Vec<Cow<'_, Delta>>> {
    let mut by_name: BTreeMap<&str, Cow<'_, Delta>> = BTreeMap::new();
    for d in deltas {
        let Some(acc) = by_name.get_mut(d.tensor()) else {
            by_name.insert(d.tensor(), Cow::Borrowed(d));
            continue;
        };
        match (acc.to_mut(), d) {
            (Delta::Bias { values, .. }, Delta::Bias { values: v, .. }) => {
                if values.len() != v.len() {
                    bail!(
                        "two edits of {} have {} and {} values",
                        d.tensor(),
                        values.len(),
                        v.len()
                    );
                }
                values.iter_mut().zip(v).for_each(|(a, b)| *a += b);
            }
            (
                Delta::Matrix {
                    delta,
                    importance,
                    hessian,
                    ..
                },
                Delta::Matrix {
                    delta: d2,
                    importance: i,
                    hessian: h,
                    ..
                },
            ) => {
                *delta = std::mem::replace(delta, Change::Dense(Vec::new())).plus(d2)?;
                if importance.is_none() {
                    importance.clone_from(i);
                }
                if hessian.is_none() {
                    hessian.clone_from(h);
                }
            }
            _ => bail!("{} is edited both as a bias and as a matrix", d.tensor()),
        }
    }
    Ok(by_name.into_values().collect())
}

/// Turn `deltas` (scaled by `strength`) into GGUF edits against `src`. A strength of 0 yields
/// no tensor edits at all, so the output's tensors are the input's, byte for byte. Matrices
/// are stored first: output-aware rounding may add to a bias.
pub fn to_gguf_edits(
    src: &GgufFile,
    deltas: &[Delta],
    strength: f32,
    edit_type: EditType,
) -> Result<(Edits, Vec<TensorReport>)> {
    let mut edits = Edits::new();
    let mut reports = Vec::new();
    if strength == 0.0 {
        return Ok((edits, reports));
    }
    let merged = merge(deltas)?;
    // Bias corrections from output-aware rounding: tensor → (after, values).
    let mut extra: BTreeMap<String, (String, Vec<f32>)> = BTreeMap::new();
    for d in &merged {
        let Delta::Matrix {
            tensor,
            delta,
            importance,
            hessian,
        } = d.as_ref()
        else {
            continue;
        };
        let scaled = delta.scaled(strength)?;
        let r = requantize(
            src,
            tensor,
            &scaled,
            importance.as_deref(),
            hessian.as_deref(),
            edit_type,
        )?;
        reports.push(matrix_report(tensor, &r, &scaled, hessian.as_deref()));
        if let (Some(b), Some((name, after))) =
            (r.bias, hessian.as_ref().and_then(|h| h.bias.clone()))
        {
            extra.insert(name, (after, b));
        }
        edits.replace_tensor(tensor.clone(), r.ggml_type, r.data);
    }
    let mut biases: Vec<(String, String, Vec<f32>)> = merged
        .into_iter()
        .filter_map(|d| match d.into_owned() {
            Delta::Bias {
                tensor,
                after,
                values,
            } => Some((tensor, after, values)),
            Delta::Matrix { .. } => None,
        })
        .collect();
    for b in &mut biases {
        b.2.iter_mut().for_each(|v| *v *= strength);
        if let Some((_, e)) = extra.remove(&b.0) {
            b.2.iter_mut().zip(&e).for_each(|(v, e)| *v += e);
        }
    }
    biases.extend(extra.into_iter().map(|(t, (a, v))| (t, a, v)));
    for (tensor, after, values) in biases {
        let (base, exists) = match src.header().tensor(&tensor) {
            Some(info) => {
                let bytes = src.tensor_data(info);
                let v = dequantize(info.ggml_type, bytes, info.n_elements())?;
                if v.len() != values.len() {
                    bail!("{tensor} has {} values, the edit {}", v.len(), values.len());
                }
                (v, true)
            }
            None => (vec![0.0; values.len()], false),
        };
        let new: Vec<f32> = base.iter().zip(&values).map(|(a, b)| a + b).collect();
        let data: Vec<u8> = new.iter().flat_map(|v| v.to_le_bytes()).collect();
        reports.push(TensorReport {
            name: tensor.clone(),
            ggml_type: "f32".into(),
            delta_norm: norm(&values),
            weight_norm: norm(&base),
            stored_ratio: 1.0,
            stored_cos: 1.0,
            output_cos: None,
            output_error: None,
            rounding: None,
        });
        if exists {
            edits.replace_tensor(tensor, GgmlType::F32, data);
        } else {
            edits.add_tensor(NewTensor {
                name: tensor,
                dims: vec![values.len() as u64],
                ggml_type: GgmlType::F32,
                data,
                after: Some(after),
            });
        }
    }
    Ok((edits, reports))
}

/// The report of one stored matrix: its change against the edit, in weights and (with the
/// inputs' Gram) on the layer's output.
fn matrix_report(
    tensor: &str,
    r: &Requantized,
    scaled: &[f32],
    hessian: Option<&Hessian>,
) -> TensorReport {
    let delta_norm = norm(scaled);
    let cn = norm(&r.change);
    let dot: f64 = r
        .change
        .iter()
        .zip(scaled)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let (output_cos, output_error) = hessian.and_then(|h| output_fidelity(r, scaled, h)).unzip();
    TensorReport {
        name: tensor.to_string(),
        ggml_type: r.ggml_type.name().to_string(),
        delta_norm,
        weight_norm: norm(&r.orig),
        stored_ratio: cn / delta_norm.max(1e-30),
        stored_cos: dot / (cn * delta_norm).max(1e-30),
        output_cos,
        output_error,
        rounding: r.rounding.clone(),
    }
}

/// Rows of a matrix its stored change is measured on at most (evenly spaced): two products
/// with the inputs' Gram per row, which over every row of a wide matrix cost more than
/// storing it (at d_ffn 8192, 2048 rows: two products of 275 GFLOP).
const FIDELITY_ROWS: usize = 256;

/// The stored change against the edit on the layer's output, through the inputs' Gram: their
/// cosine and the relative error `‖C − Δ‖_H / ‖Δ‖_H`, on at most [`FIDELITY_ROWS`] rows
/// (`None` if the shapes do not fit).
fn output_fidelity(r: &Requantized, scaled: &[f32], h: &Hessian) -> Option<(f64, f64)> {
    let ne0 = r.ne0;
    let rows = scaled.len() / ne0;
    if rows * ne0 != scaled.len() || r.change.len() != scaled.len() {
        return None;
    }
    let k = rows.min(FIDELITY_ROWS);
    let take: Vec<usize> = (0..k).map(|i| i * rows / k).collect();
    // With a bias column: the change is [C | b], the edit [Δ | 0].
    let wide = ne0 + (r.bias.is_some() && h.bias.is_some()) as usize;
    let rows_of = |m: &[f32], last: Option<&[f32]>| {
        ndarray::Array2::from_shape_fn((k, wide), |(i, j)| {
            let row = take[i];
            match (j < ne0, last) {
                (true, _) => m[row * ne0 + j],
                (false, Some(b)) => b[row],
                (false, None) => 0.0,
            }
        })
    };
    let bias = r.bias.as_deref().filter(|_| wide > ne0);
    let (c, d) = (rows_of(&r.change, bias), rows_of(scaled, None));
    let (cc, cd, dd) = rounding::h_products(c.view(), d.view(), &h.gram);
    let e = (cc - 2.0 * cd + dd).max(0.0).sqrt() / dd.max(1e-30).sqrt();
    Some((cd / (cc * dd).max(1e-60).sqrt(), e))
}

/// A weight matrix with a delta added, stored.
pub struct Requantized {
    /// the stored type
    pub ggml_type: GgmlType,
    /// the stored bytes
    pub data: Vec<u8>,
    /// the original weights, dequantized
    pub orig: Vec<f32>,
    /// what the stored weights differ from the original by: `Q(W+Δ) − W`, dequantized
    pub change: Vec<f32>,
    /// the row width (`ne0`)
    pub ne0: usize,
    /// what output-aware rounding adds to the output's bias
    pub bias: Option<Vec<f32>>,
    /// what output-aware rounding did, when it ran
    pub rounding: Option<RoundingReport>,
}

/// Add `delta` to weight `tensor` of `src` and store it as `edit_type` says (requantized with
/// importance weights where the type uses them; with output-aware rounding where `hessian` is
/// given and the stored type has a grid it can keep, see [`rounding`]).
pub fn requantize(
    src: &GgufFile,
    tensor: &str,
    delta: &[f32],
    importance: Option<&[f32]>,
    hessian: Option<&Hessian>,
    edit_type: EditType,
) -> Result<Requantized> {
    let info = src
        .header()
        .tensor(tensor)
        .with_context(|| format!("the model has no tensor {tensor}"))?;
    let orig = dequantize(info.ggml_type, src.tensor_data(info), info.n_elements())?;
    if orig.len() != delta.len() {
        bail!(
            "{tensor} has {} values, the edit {}",
            orig.len(),
            delta.len()
        );
    }
    let ty = edit_type.resolve(info.ggml_type);
    let new: Vec<f32> = orig.iter().zip(delta).map(|(a, b)| a + b).collect();
    let imatrix = importance.filter(|_| ty.is_quantized());
    let ne0 = info.ne0() as usize;
    let (data, stored, bias, rounded) = match hessian.filter(|h| h.search && rounding::supports(ty))
    {
        Some(h) => {
            let c = rounding::round(ty, &new, ne0, h)
                .with_context(|| format!("requantizing {tensor} to {}", ty.name()))?;
            let report = RoundingReport {
                moved: c.moved,
                damp: c.damp,
                mismatched: c.mismatched,
            };
            (c.data, c.stored, c.bias, Some(report))
        }
        None => {
            let data = quantize(ty, &new, ne0 as u64, imatrix)
                .with_context(|| format!("requantizing {tensor} to {}", ty.name()))?;
            let stored = dequantize(ty, &data, info.n_elements())?;
            (data, stored, None, None)
        }
    };
    let change = stored.iter().zip(&orig).map(|(a, b)| a - b).collect();
    Ok(Requantized {
        ggml_type: ty,
        data,
        orig,
        change,
        ne0,
        bias,
        rounding: rounded,
    })
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_edits_of_one_tensor() {
        let b = |v: f32| Delta::Bias {
            tensor: "t".into(),
            after: "w".into(),
            values: vec![v, 2.0 * v],
        };
        let edits = [b(1.0), b(2.0)];
        let m = merge(&edits).unwrap();
        assert_eq!(m.len(), 1);
        let Delta::Bias { values, .. } = m[0].as_ref() else {
            panic!("a bias edit merged into {:?}", m[0]);
        };
        assert_eq!(values, &[3.0, 6.0]);
    }

    fn product(rows: usize, cols: usize, rank: usize, seed: f32) -> (Change, Vec<f32>) {
        let b: Vec<f32> = (0..rows * rank)
            .map(|i| (i as f32 * 0.37 + seed).sin())
            .collect();
        let a: Vec<f32> = (0..rank * cols)
            .map(|i| (i as f32 * 0.91 - seed).cos())
            .collect();
        let mut d = vec![0.0; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                d[i * cols + j] = (0..rank).map(|k| b[i * rank + k] * a[k * cols + j]).sum();
            }
        }
        (Change::Product { b, a, rank }, d)
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
    }

    #[test]
    fn a_factored_change_stores_the_product_of_its_factors() {
        let (c, d) = product(5, 7, 3, 0.2);
        let want: Vec<f32> = d.iter().map(|x| x * 0.5).collect();
        assert!(close(&c.scaled(0.5).unwrap(), &want));
    }

    #[test]
    fn factored_changes_of_one_matrix_sum_by_stacking_and_with_dense_ones_by_value() {
        let (p, dp) = product(4, 6, 2, 0.1);
        let (q, dq) = product(4, 6, 3, 0.7);
        let sum: Vec<f32> = dp.iter().zip(&dq).map(|(a, b)| a + b).collect();
        let stacked = p.clone().plus(&q).unwrap();
        assert!(matches!(stacked, Change::Product { rank: 5, .. }));
        assert!(close(&stacked.scaled(1.0).unwrap(), &sum));
        let mixed = Change::Dense(dp.clone()).plus(&q).unwrap();
        assert!(matches!(mixed, Change::Dense(_)));
        assert!(close(&mixed.scaled(1.0).unwrap(), &sum));
        assert!(Change::Dense(vec![1.0; 3]).plus(&q).is_err());
    }
}
