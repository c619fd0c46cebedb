//! Quantization-aware training. A merged adapter is stored requantized to each matrix's own
//! type, and a small change to a 4-bit matrix mostly rounds back to the original grid point: a
//! model trained in full precision loses much of what it learned when it is written. So, from
//! some step on, the student runs every adapted matrix as it will be stored, `Q(W + B·A)` (ggml's
//! own quantizer, with the adapted matrices' input power as importance), refreshed every few
//! steps, while the adapter's gradient passes straight through the rounding. The rounded
//! matrices are held as stored (quantized), not as a second f32 copy of the model.

use anyhow::{Context as _, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;

use super::lora::LoraSet;
use super::student::{Frozen, Student};
use crate::engine::quantize;
use crate::store::EditType;

/// Quantize-dequantize `W + B·A` of every adapter to its stored type and hand it to the student.
pub fn refresh(
    student: &Student,
    lora: &LoraSet,
    src: &gguf::GgufFile,
    edit_type: EditType,
    importance: &BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    let names: Vec<&String> = lora.adapters.keys().collect();
    let stored: Vec<(String, Frozen)> = names
        .par_iter()
        .map(|name| -> Result<(String, Frozen)> {
            let (layer, kind) = parse(name)?;
            let info = src
                .header()
                .tensor(name)
                .with_context(|| format!("the model has no tensor {name}"))?;
            let ty = edit_type.resolve(info.ggml_type);
            let w = student.original(layer, kind)?;
            let ad = lora.get(name).context("adapter vanished")?;
            let target = (w + ad.b.as_tensor().matmul(ad.a.as_tensor())?)?;
            let (rows, cols) = target.dims2()?;
            let v = target.flatten_all()?.to_vec1::<f32>()?;
            drop(target);
            let imp = importance.get(*name).filter(|_| ty.is_quantized());
            let q = quantize(ty, &v, info.ne0(), imp.map(Vec::as_slice))?;
            Ok(((*name).clone(), Frozen::new(ty, q, rows, cols)?))
        })
        .collect::<Result<_>>()?;
    for (name, w) in stored {
        student.set_quantized(&name, w);
    }
    Ok(())
}

/// `blk.{layer}.{kind}.weight` → (layer, kind).
fn parse(name: &str) -> Result<(usize, &str)> {
    let rest = name.strip_prefix("blk.").context("not a block tensor")?;
    let (l, kind) = rest.split_once('.').context("not a block tensor")?;
    let kind = kind.strip_suffix(".weight").context("not a weight")?;
    Ok((l.parse().context("bad layer")?, kind))
}
