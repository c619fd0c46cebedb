//! A LoRA adapter GGUF llama.cpp loads with `--lora` (`general.type = adapter`,
//! `adapter.type = lora`): every changed weight matrix `ΔW = B·A`, from its SVD
//! (LAPACK through ndarray-linalg), truncated to the rank asked for.
//!
//! Shapes as llama.cpp expects them: `W.lora_a` is `[n_in, r]` (ggml order) holding `Vᵣᵀ`,
//! `W.lora_b` is `[r, n_out]` holding `Uᵣ·Σᵣ`; `adapter.lora.alpha = r`, so llama.cpp's scale
//! `alpha / r` is 1. A rank of `min(n_in, n_out)` or more is exact.

use anyhow::{bail, Context as _, Result};
use gguf::{GgmlType, GgufFile, Metadata, NewTensor, WriteOptions};
use ndarray::{s, Array2};
use ndarray_linalg::SVD;
use std::path::Path;

use super::{changes, f32_bytes, ExportReport};

/// Writes the LoRA adapter of `patched` (against `base`), rank at most `rank`, to `out`.
pub fn write(base: &GgufFile, patched: &GgufFile, rank: usize, out: &Path) -> Result<ExportReport> {
    if rank == 0 {
        bail!("--lora-rank must be at least 1");
    }
    let arch = base
        .header()
        .architecture()
        .context("the model has no general.architecture")?
        .to_string();
    let mut tensors = Vec::new();
    let mut min_energy = 1f64;
    let mut used_rank = 0;
    for (name, dims, d) in changes(base, patched)? {
        if dims.len() != 2 || !name.ends_with(".weight") {
            bail!(
                "the patch changes {name}, which a LoRA adapter cannot carry (biases and vectors): \
                 use --emit merged, or --method down or matrix"
            );
        }
        let (n_in, n_out) = (dims[0] as usize, dims[1] as usize);
        let m = Array2::from_shape_vec((n_out, n_in), d)?;
        let (u, sv, vt) = m
            .svd(true, true)
            .with_context(|| format!("SVD of the change of {name} failed"))?;
        let (u, vt) = (u.context("no U")?, vt.context("no Vᵀ")?);
        let r = rank.min(sv.len());
        let total: f64 = sv.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let kept: f64 = sv
            .iter()
            .take(r)
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        min_energy = min_energy.min(if total > 0.0 { kept / total } else { 1.0 });
        if used_rank != 0 && used_rank != r {
            bail!(
                "the changed matrices have different shapes: give --lora-rank at most {}",
                used_rank.min(r)
            );
        }
        used_rank = r;
        let a = vt.slice(s![..r, ..]).to_owned(); // r × n_in, row-major = ggml [n_in, r]
        let mut b = u.slice(s![.., ..r]).to_owned(); // n_out × r = ggml [r, n_out]
        for (mut col, &sigma) in b.columns_mut().into_iter().zip(sv.iter()) {
            col *= sigma;
        }
        let base_name = name.trim_end_matches(".weight");
        for (suffix, m, dims) in [
            ("lora_a", a, vec![n_in as u64, r as u64]),
            ("lora_b", b, vec![r as u64, n_out as u64]),
        ] {
            let v: Vec<f32> = m.iter().copied().collect();
            tensors.push(NewTensor {
                name: format!("{base_name}.weight.{suffix}"),
                dims,
                ggml_type: GgmlType::F32,
                data: f32_bytes(&v),
                after: None,
            });
        }
    }
    if tensors.is_empty() {
        bail!("the patch changes no weight matrix");
    }
    let mut meta = Metadata::new();
    meta.set("general.architecture", arch.as_str());
    meta.set("general.type", "adapter");
    meta.set("adapter.type", "lora");
    meta.set("adapter.lora.alpha", used_rank as f32);
    let n = tensors.len() / 2;
    gguf::write_new(meta, tensors, out, &WriteOptions::default())?;
    Ok(ExportReport {
        kind: "lora".into(),
        entries: n,
        rank: Some(used_rank),
        min_retained_energy: Some(min_energy),
    })
}
