//! Edits to tensors and how they become a new GGUF: biases added (or created as F32), matrix
//! deltas added to the dequantized weight and requantized with ggml's codec.

use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;

use gguf::{Edits, GgmlType, GgufFile, NewTensor};

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
        /// row-major delta, `ne1 × ne0`
        delta: Vec<f32>,
        /// per-column importance (mean squared input), for requantization
        importance: Option<Vec<f32>>,
    },
}

impl Delta {
    /// The tensor this edit touches.
    pub fn tensor(&self) -> &str {
        match self {
            Delta::Bias { tensor, .. } | Delta::Matrix { tensor, .. } => tensor,
        }
    }

    fn values(&self) -> &[f32] {
        match self {
            Delta::Bias { values, .. } => values,
            Delta::Matrix { delta, .. } => delta,
        }
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
}

/// Sum edits that touch the same tensor.
pub fn merge(deltas: Vec<Delta>) -> Vec<Delta> {
    let mut by_name: BTreeMap<String, Delta> = BTreeMap::new();
    for d in deltas {
        match by_name.get_mut(d.tensor()) {
            None => {
                by_name.insert(d.tensor().to_string(), d);
            }
            Some(Delta::Bias { values, .. }) => {
                for (a, b) in values.iter_mut().zip(d.values()) {
                    *a += b;
                }
            }
            Some(Delta::Matrix {
                delta, importance, ..
            }) => {
                for (a, b) in delta.iter_mut().zip(d.values()) {
                    *a += b;
                }
                if importance.is_none() {
                    if let Delta::Matrix { importance: i, .. } = d {
                        *importance = i;
                    }
                }
            }
        }
    }
    by_name.into_values().collect()
}

/// Turn `deltas` (scaled by `strength`) into GGUF edits against `src`. A strength of 0 yields
/// no tensor edits at all, so the output's tensors are the input's, byte for byte.
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
    for d in merge(deltas.to_vec()) {
        let scaled: Vec<f32> = d.values().iter().map(|v| v * strength).collect();
        let delta_norm = norm(&scaled);
        match &d {
            Delta::Bias { tensor, after, .. } => {
                let (base, exists) = match src.header().tensor(tensor) {
                    Some(info) => {
                        let bytes = src.tensor_data(info);
                        let v = dequantize(info.ggml_type, bytes, info.n_elements())?;
                        if v.len() != scaled.len() {
                            bail!("{tensor} has {} values, the edit {}", v.len(), scaled.len());
                        }
                        (v, true)
                    }
                    None => (vec![0.0; scaled.len()], false),
                };
                let new: Vec<f32> = base.iter().zip(&scaled).map(|(a, b)| a + b).collect();
                let data: Vec<u8> = new.iter().flat_map(|v| v.to_le_bytes()).collect();
                if exists {
                    edits.replace_tensor(tensor.clone(), GgmlType::F32, data);
                } else {
                    edits.add_tensor(NewTensor {
                        name: tensor.clone(),
                        dims: vec![scaled.len() as u64],
                        ggml_type: GgmlType::F32,
                        data,
                        after: Some(after.clone()),
                    });
                }
                reports.push(TensorReport {
                    name: tensor.clone(),
                    ggml_type: "f32".into(),
                    delta_norm,
                    weight_norm: norm(&base),
                    stored_ratio: 1.0,
                    stored_cos: 1.0,
                });
            }
            Delta::Matrix {
                tensor, importance, ..
            } => {
                let r = requantize(src, tensor, &scaled, importance.as_deref(), edit_type)?;
                let (ty, data, orig, change) = (r.ggml_type, r.data, r.orig, r.change);
                let cn = norm(&change);
                let dot: f64 = change
                    .iter()
                    .zip(&scaled)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                reports.push(TensorReport {
                    name: tensor.clone(),
                    ggml_type: ty.name().to_string(),
                    delta_norm,
                    weight_norm: norm(&orig),
                    stored_ratio: cn / delta_norm.max(1e-30),
                    stored_cos: dot / (cn * delta_norm).max(1e-30),
                });
                edits.replace_tensor(tensor.clone(), ty, data);
            }
        }
    }
    Ok((edits, reports))
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
}

/// Add `delta` to weight `tensor` of `src` and store it as `edit_type` says (requantized with
/// importance weights where the type uses them).
pub fn requantize(
    src: &GgufFile,
    tensor: &str,
    delta: &[f32],
    importance: Option<&[f32]>,
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
    let data = quantize(ty, &new, info.ne0(), imatrix)
        .with_context(|| format!("requantizing {tensor} to {}", ty.name()))?;
    let stored = dequantize(ty, &data, info.n_elements())?;
    let change = stored.iter().zip(&orig).map(|(a, b)| a - b).collect();
    Ok(Requantized {
        ggml_type: ty,
        data,
        orig,
        change,
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
        let m = merge(vec![b(1.0), b(2.0)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].values(), &[3.0, 6.0]);
    }
}
