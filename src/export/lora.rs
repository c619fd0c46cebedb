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

use super::changes::{changes, f32_bytes, ExportReport};

/// Writes the LoRA adapter of `patched` (against `base`), rank at most `rank`, to `out`.
pub fn write(base: &GgufFile, patched: &GgufFile, rank: usize, out: &Path) -> Result<ExportReport> {
    crate::options::ensure(rank > 0, || "`lora_rank` must be at least 1".into())?;
    let arch = base
        .header()
        .architecture()
        .context("the model has no general.architecture")?
        .to_string();
    let mut factors = Vec::new();
    let mut min_energy = 1f64;
    let mut used_rank = 0;
    for (name, dims, d) in changes(base, patched)? {
        if dims.len() != 2 || !name.ends_with(".weight") {
            bail!(
                "the patch changes {name}, which a LoRA adapter cannot carry (biases and vectors): \
                 use `emit` merged, or `method` down or matrix"
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
                "the changed matrices have different shapes: give a `lora_rank` of at most {}",
                used_rank.min(r)
            );
        }
        used_rank = r;
        let a = vt.slice(s![..r, ..]).to_owned(); // r × n_in, row-major = ggml [n_in, r]
        let mut b = u.slice(s![.., ..r]).to_owned(); // n_out × r = ggml [r, n_out]
        for (mut col, &sigma) in b.columns_mut().into_iter().zip(sv.iter()) {
            col *= sigma;
        }
        factors.push(Factors {
            weight: name.clone(),
            n_in,
            n_out,
            a: a.iter().copied().collect(),
            b: b.iter().copied().collect(),
        });
    }
    if factors.is_empty() {
        bail!("the patch changes no weight matrix");
    }
    let n = factors.len();
    write_adapter(&arch, &factors, used_rank as f32, out)?;
    Ok(ExportReport {
        kind: "lora".into(),
        entries: n,
        rank: Some(used_rank),
        min_retained_energy: Some(min_energy),
    })
}

/// One adapted weight matrix `ΔW = B·A` as llama.cpp reads it: `A` is `[n_in, r]` in ggml
/// order (`r` rows of `n_in`), `B` is `[r, n_out]` (`n_out` rows of `r`).
#[derive(Debug, Clone)]
pub struct Factors {
    /// the adapted tensor, e.g. `blk.3.ffn_down.weight`
    pub weight: String,
    /// its input width
    pub n_in: usize,
    /// its output width
    pub n_out: usize,
    /// `A`, row-major `r × n_in`
    pub a: Vec<f32>,
    /// `B`, row-major `n_out × r`
    pub b: Vec<f32>,
}

/// Write `factors` as a LoRA adapter GGUF for a model of architecture `arch`: `W.lora_a`,
/// `W.lora_b` in F32, `adapter.lora.alpha = alpha` (llama.cpp scales by `alpha / r`; 0 means
/// no scaling). Written atomically, like every output.
pub fn write_adapter(arch: &str, factors: &[Factors], alpha: f32, out: &Path) -> Result<()> {
    let mut tensors = Vec::new();
    for f in factors {
        let r = f.a.len() / f.n_in.max(1);
        for (suffix, v, dims) in [
            ("lora_a", &f.a, vec![f.n_in as u64, r as u64]),
            ("lora_b", &f.b, vec![r as u64, f.n_out as u64]),
        ] {
            tensors.push(NewTensor {
                name: format!("{}.{suffix}", f.weight),
                dims,
                ggml_type: GgmlType::F32,
                data: f32_bytes(v),
                after: None,
            });
        }
    }
    if tensors.is_empty() {
        bail!("no adapters to write");
    }
    let mut meta = Metadata::new();
    meta.set("general.architecture", arch);
    meta.set("general.type", "adapter");
    meta.set("adapter.type", "lora");
    meta.set("adapter.lora.alpha", alpha);
    gguf::write_new(meta, tensors, out, &WriteOptions::default())?;
    Ok(())
}
