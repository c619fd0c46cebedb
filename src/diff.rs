//! `gguf-sleep diff A B`: what changed between two GGUF files.
//!
//! Metadata is compared key by key with its original types; tensors by name: identical bytes,
//! or changed with the relative Frobenius norm of the change `‖B − A‖ / ‖A‖`, both dequantized
//! through ggml's codecs (so a tensor stored at another type is compared by value).

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, Result};
use gguf::{GgufFile, TensorInfo};
use serde::Serialize;

use crate::engine::dequantize;
use crate::inspect::short_display;

/// How one metadata key differs.
#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// Its value in A (`None`: added in B).
    pub a: Option<String>,
    /// Its value in B (`None`: removed in B).
    pub b: Option<String>,
}

/// How one tensor differs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TensorChange {
    /// Present in B only.
    Added {
        /// tensor name
        name: String,
        /// its type in B
        ggml_type: String,
    },
    /// Present in A only.
    Removed {
        /// tensor name
        name: String,
    },
    /// Different shapes: not comparable by value.
    Reshaped {
        /// tensor name
        name: String,
        /// dims in A
        a: Vec<u64>,
        /// dims in B
        b: Vec<u64>,
    },
    /// Same shape, different bytes.
    Changed {
        /// tensor name
        name: String,
        /// type in A
        type_a: String,
        /// type in B
        type_b: String,
        /// `‖B − A‖_F / ‖A‖_F`, dequantized (∞ when A is all zeros)
        rel_change: f64,
    },
}

/// Everything `diff` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Metadata keys added, changed or removed, in A's order then B's new keys.
    pub metadata: Vec<KeyChange>,
    /// Tensors that are not byte-identical, in A's order then B's new tensors.
    pub tensors: Vec<TensorChange>,
    /// Tensors present in both with identical type, shape and bytes.
    pub identical_tensors: usize,
    /// One-line summary.
    pub verdict: String,
}

/// Compare two GGUF files.
pub fn diff(a: &Path, b: &Path) -> Result<DiffReport> {
    let fa = GgufFile::open(a)?;
    let fb = GgufFile::open(b)?;
    let (ha, hb) = (fa.header(), fb.header());

    let mut metadata = Vec::new();
    for (k, va) in ha.metadata.iter() {
        match hb.metadata.get(k) {
            Some(vb) if vb == va => {}
            vb => metadata.push(KeyChange {
                key: k.to_string(),
                a: Some(short_display(va)),
                b: vb.map(short_display),
            }),
        }
    }
    for (k, vb) in hb.metadata.iter() {
        if !ha.metadata.contains_key(k) {
            metadata.push(KeyChange {
                key: k.to_string(),
                a: None,
                b: Some(short_display(vb)),
            });
        }
    }

    let mut tensors = Vec::new();
    let mut identical = 0;
    for ta in &ha.tensors {
        let Some(tb) = hb.tensor(&ta.name) else {
            tensors.push(TensorChange::Removed {
                name: ta.name.clone(),
            });
            continue;
        };
        if ta.dims != tb.dims {
            tensors.push(TensorChange::Reshaped {
                name: ta.name.clone(),
                a: ta.dims.clone(),
                b: tb.dims.clone(),
            });
        } else if ta.ggml_type == tb.ggml_type && fa.tensor_data(ta) == fb.tensor_data(tb) {
            identical += 1;
        } else {
            tensors.push(TensorChange::Changed {
                name: ta.name.clone(),
                type_a: ta.ggml_type.name().to_string(),
                type_b: tb.ggml_type.name().to_string(),
                rel_change: rel_change(&fa, ta, &fb, tb)?,
            });
        }
    }
    for tb in &hb.tensors {
        if ha.tensor(&tb.name).is_none() {
            tensors.push(TensorChange::Added {
                name: tb.name.clone(),
                ggml_type: tb.ggml_type.name().to_string(),
            });
        }
    }
    let verdict = verdict(&metadata, &tensors, identical);
    Ok(DiffReport {
        metadata,
        tensors,
        identical_tensors: identical,
        verdict,
    })
}

fn rel_change(fa: &GgufFile, ta: &TensorInfo, fb: &GgufFile, tb: &TensorInfo) -> Result<f64> {
    let n = ta.n_elements();
    let va = dequantize(ta.ggml_type, fa.tensor_data(ta), n)
        .with_context(|| format!("cannot dequantize {} in A", ta.name))?;
    let vb = dequantize(tb.ggml_type, fb.tensor_data(tb), n)
        .with_context(|| format!("cannot dequantize {} in B", tb.name))?;
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in va.iter().zip(&vb) {
        let d = f64::from(*y) - f64::from(*x);
        num += d * d;
        den += f64::from(*x) * f64::from(*x);
    }
    Ok(if den > 0.0 {
        (num / den).sqrt()
    } else if num > 0.0 {
        f64::INFINITY
    } else {
        0.0
    })
}

fn verdict(metadata: &[KeyChange], tensors: &[TensorChange], identical: usize) -> String {
    if metadata.is_empty() && tensors.is_empty() {
        return format!("same: identical metadata and {identical} identical tensors");
    }
    let count = |f: fn(&TensorChange) -> bool| tensors.iter().filter(|t| f(t)).count();
    let changed = count(|t| matches!(t, TensorChange::Changed { .. }));
    let added = count(|t| matches!(t, TensorChange::Added { .. }));
    let removed = count(|t| matches!(t, TensorChange::Removed { .. }));
    let reshaped = count(|t| matches!(t, TensorChange::Reshaped { .. }));
    let max = tensors
        .iter()
        .filter_map(|t| match t {
            TensorChange::Changed { rel_change, .. } => Some(*rel_change),
            _ => None,
        })
        .fold(0f64, f64::max);
    let mut parts = vec![format!("{} metadata keys differ", metadata.len())];
    if changed > 0 {
        parts.push(format!(
            "{changed} tensors changed (largest relative change {max:.3e})"
        ));
    }
    for (n, what) in [
        (added, "added"),
        (removed, "removed"),
        (reshaped, "reshaped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} tensors {what}"));
        }
    }
    parts.push(format!("{identical} identical"));
    format!("different: {}", parts.join(", "))
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.metadata {
            match (&m.a, &m.b) {
                (None, Some(b)) => writeln!(f, "+ {} = {b}", m.key)?,
                (Some(a), None) => writeln!(f, "- {} = {a}", m.key)?,
                (Some(a), Some(b)) => writeln!(f, "~ {}: {a} -> {b}", m.key)?,
                (None, None) => {}
            }
        }
        for t in &self.tensors {
            match t {
                TensorChange::Added { name, ggml_type } => writeln!(f, "+ {name} ({ggml_type})")?,
                TensorChange::Removed { name } => writeln!(f, "- {name}")?,
                TensorChange::Reshaped { name, a, b } => {
                    writeln!(f, "~ {name}: shape {a:?} -> {b:?}")?
                }
                TensorChange::Changed {
                    name,
                    type_a,
                    type_b,
                    rel_change,
                } => {
                    let ty = if type_a == type_b {
                        type_a.clone()
                    } else {
                        format!("{type_a} -> {type_b}")
                    };
                    writeln!(f, "~ {name} ({ty}): relative change {rel_change:.3e}")?
                }
            }
        }
        writeln!(f, "{}", self.verdict)
    }
}
