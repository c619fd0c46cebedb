//! What an export is made from: the tensors a patch changed, as f32 differences; and what an
//! export reports.

use anyhow::{Context as _, Result};
use gguf::{GgufFile, TensorInfo};

use crate::engine::dequantize;

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// "lora" or "cvec"
    pub kind: String,
    /// tensors (LoRA: pairs) or directions written
    pub entries: usize,
    /// LoRA: rank used
    pub rank: Option<usize>,
    /// LoRA: the smallest share of a change's energy (squared Frobenius norm) the rank keeps
    pub min_retained_energy: Option<f64>,
}

/// A tensor's values as f32.
pub fn values(f: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    dequantize(t.ggml_type, f.tensor_data(t), t.n_elements())
        .with_context(|| format!("cannot dequantize {}", t.name))
}

/// A tensor of the patched file that differs from the base: name, dims and the change.
pub type Change = (String, Vec<u64>, Vec<f32>);

/// Each tensor of `patched` that differs from `base` (or is new): name, dims and the change
/// `patched − base` (the new values where `base` has no such tensor).
pub fn changes(base: &GgufFile, patched: &GgufFile) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for t in &patched.header().tensors {
        match base.header().tensor(&t.name) {
            Some(b)
                if b.ggml_type == t.ggml_type && base.tensor_data(b) == patched.tensor_data(t) => {}
            Some(b) => {
                anyhow::ensure!(b.dims == t.dims, "{} changed shape", t.name);
                let (x, y) = (values(base, b)?, values(patched, t)?);
                let d = y.iter().zip(&x).map(|(y, x)| y - x).collect();
                out.push((t.name.clone(), t.dims.clone(), d));
            }
            None => out.push((t.name.clone(), t.dims.clone(), values(patched, t)?)),
        }
    }
    Ok(out)
}

/// Little-endian bytes of f32 values (an F32 tensor's data).
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
