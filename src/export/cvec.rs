//! A llama.cpp control vector (`general.architecture = controlvector`, F32 `direction.N`
//! `[n_embd]`) from a patch that changes only the block-output biases (`--method cvec`).
//!
//! llama.cpp adds `direction.N` to the output of layer N (after the MLP's residual add), which
//! is where `blk.N.ffn_down.bias` lands in the llama family; it never applies one to layer 0.

use anyhow::{bail, Result};
use gguf::{GgmlType, GgufFile, Metadata, NewTensor, WriteOptions};
use std::path::Path;

use super::changes::{changes, f32_bytes, ExportReport};

/// Writes the control vector of `patched` (against `base`) to `out`.
pub fn write(base: &GgufFile, patched: &GgufFile, out: &Path) -> Result<ExportReport> {
    let arch = base.header().architecture().unwrap_or_default().to_string();
    let mut dirs = Vec::new();
    for (name, dims, d) in changes(base, patched)? {
        let layer = gguf::block_of(&name)
            .filter(|&(_, rest)| rest == "ffn_down.bias")
            .map(|(l, _)| l);
        let Some(layer) = layer else {
            bail!(
                "the patch changes {name}, which a control vector cannot carry: use `method` cvec"
            );
        };
        if layer == 0 {
            bail!("llama.cpp applies no control vector to layer 0: patch `layers` 1..N");
        }
        debug_assert_eq!(dims.len(), 1);
        dirs.push((layer, d));
    }
    if dirs.is_empty() {
        bail!("the patch changes nothing a control vector can carry");
    }
    dirs.sort_by_key(|(l, _)| *l);
    let mut meta = Metadata::new();
    meta.set("general.architecture", "controlvector");
    meta.set("controlvector.model_hint", arch.as_str());
    meta.set("controlvector.layer_count", dirs.len() as u32);
    let tensors = dirs
        .iter()
        .map(|(l, d)| NewTensor {
            name: format!("direction.{l}"),
            dims: vec![d.len() as u64],
            ggml_type: GgmlType::F32,
            data: f32_bytes(d),
            after: None,
        })
        .collect();
    gguf::write_new(meta, tensors, out, &WriteOptions::default())?;
    Ok(ExportReport {
        kind: "cvec".into(),
        entries: dirs.len(),
        rank: None,
        min_retained_energy: None,
    })
}

/// The directions of a control-vector file as llama.cpp's loader lays them out: `n_embd`
/// values per layer from layer 1 to `n_layer − 1`, zero where the file has none.
pub fn read(path: &Path, n_embd: usize, n_layer: usize) -> Result<Vec<f32>> {
    let f = GgufFile::open(path)?;
    if f.header().architecture() != Some("controlvector") {
        bail!("{} is not a control vector", path.display());
    }
    let mut data = vec![0f32; n_embd * n_layer.saturating_sub(1)];
    for t in &f.header().tensors {
        let Some(l) = t
            .name
            .strip_prefix("direction.")
            .and_then(|l| l.parse::<usize>().ok())
        else {
            continue;
        };
        if l == 0 || l >= n_layer || t.n_elements() != n_embd as u64 {
            bail!("{}: {} does not fit this model", path.display(), t.name);
        }
        let v = super::changes::values(&f, t)?;
        data[(l - 1) * n_embd..l * n_embd].copy_from_slice(&v);
    }
    Ok(data)
}
