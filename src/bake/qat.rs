//! Quantization-aware training. A merged adapter is stored requantized to each matrix's own
//! type, and a small change to a 4-bit matrix mostly rounds back to the original grid point: a
//! model trained in full precision loses much of what it learned when it is written. So, from
//! some step on, the student runs every adapted matrix as it will be stored, `Q(W + B·A)` (ggml's
//! own quantizer, with the adapted matrices' input power as importance), refreshed every few
//! steps, while the adapter's gradient passes straight through the rounding. The rounded
//! matrices are held as stored (quantized), not as a second f32 copy of the model.

use anyhow::{Context as _, Result};
use candle_core::Tensor;
use gguf::GgmlType;
use std::collections::BTreeMap;

use super::lora::LoraSet;
use super::student::{Frozen, Student};
use crate::engine::quantize;
use crate::store::EditType;

/// Quantize `W + B·A` of every adapter to its stored type and hand it to the student.
///
/// One matrix at a time, a band of rows at a time (the codecs and the band's product run in
/// parallel): a refresh holds one band in f32 and, beside the student's, one matrix's old and
/// new rounded copies, whatever the model's size.
pub fn refresh(
    student: &Student,
    lora: &LoraSet,
    src: &gguf::GgufFile,
    edit_type: EditType,
    importance: &BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    for (name, ad) in &lora.adapters {
        let (layer, kind) = parse(name)?;
        let info = src
            .header()
            .tensor(name)
            .with_context(|| format!("the model has no tensor {name}"))?;
        let ty = edit_type.resolve(info.ggml_type);
        let w = student.original(layer, kind)?;
        let imp = importance.get(name).filter(|_| ty.is_quantized());
        let q = requantized(
            w,
            ad.a.as_tensor(),
            ad.b.as_tensor(),
            ty,
            imp.map(Vec::as_slice),
        )?;
        student.set_quantized(name, q);
    }
    Ok(())
}

/// `Q(W + B·A)` in type `ty`, built a band of `W`'s rows at a time (rows quantize
/// independently, so this is the whole matrix's quantization).
pub fn requantized(
    w: &Frozen,
    a: &Tensor,
    b: &Tensor,
    ty: GgmlType,
    importance: Option<&[f32]>,
) -> Result<Frozen> {
    let (rows, cols) = w.shape();
    let mut q = Vec::with_capacity(ty.row_bytes(cols as u64).unwrap_or(0) as usize * rows);
    for (first, n) in w.bands() {
        let band = (w.band(first, n)? + b.narrow(0, first, n)?.matmul(a)?)?;
        let v = band.flatten_all()?.to_vec1::<f32>()?;
        q.extend(quantize(ty, &v, cols as u64, importance)?);
    }
    Ok(Frozen::new(ty, q, rows, cols)?)
}

/// `blk.{layer}.{kind}.weight` → (layer, kind).
fn parse(name: &str) -> Result<(usize, &str)> {
    let (l, rest) = gguf::block_of(name).context("not a block tensor")?;
    Ok((l, rest.strip_suffix(".weight").context("not a weight")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn banded_requantization_is_the_whole_matrix_quantization() -> Result<()> {
        // 513 rows of 32 768 values: bands of 256, 256 and 1 rows.
        let (rows, cols, r) = (513, 1 << 15, 4);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (rows, cols), &dev)?;
        let stored = quantize(
            GgmlType::Q4_K,
            &w.flatten_all()?.to_vec1()?,
            cols as u64,
            None,
        )?;
        let w = Frozen::new(GgmlType::Q4_K, stored, rows, cols)?;
        assert_eq!(w.bands().len(), 3);
        let a = Tensor::randn(0f32, 0.1, (r, cols), &dev)?;
        let b = Tensor::randn(0f32, 0.1, (rows, r), &dev)?;
        let imp: Vec<f32> = (0..cols).map(|i| 1.0 + (i % 7) as f32).collect();
        let got = requantized(&w, &a, &b, GgmlType::Q4_K, Some(&imp))?.dequantized()?;
        let whole = (w.dequantized()? + b.matmul(&a)?)?;
        let want = quantize(
            GgmlType::Q4_K,
            &whole.flatten_all()?.to_vec1()?,
            cols as u64,
            Some(&imp),
        )?;
        let want = Frozen::new(GgmlType::Q4_K, want, rows, cols)?.dequantized()?;
        let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "banded and whole quantizations differ by {diff}");
        // and the adapter's change survives the rounding somewhere
        let moved = (got - w.dequantized()?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(moved > 0.0);
        Ok(())
    }
}
