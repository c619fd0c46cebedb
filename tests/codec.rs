//! ggml's codecs on real quantized tensors: dequantize → quantize of a Q4_1 tensor (SmolLM2) and
//! a Q4_K and a Q6_K tensor (Gemma-3) either reproduces the original bytes or, where ggml's
//! quantizer is not idempotent, stays far below the type's own quantization error.
//!
//! The type's quantization error is measured on near-float weights of the same model: a Q8_0
//! tensor (8-bit, ~0.4% error) dequantized and quantized afresh to the type. That is what the
//! original float weights went through when the file was made.

mod util;

use std::path::Path;

use gguf::{GgmlType, GgufFile};
use gguf_sleep::engine::{dequantize, quantize, quantize_requires_imatrix, CodecError};

fn norm(v: impl Iterator<Item = f32>) -> f64 {
    v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// ‖a − b‖ / ‖b‖
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    norm(a.iter().zip(b).map(|(x, y)| x - y)) / norm(b.iter().copied())
}

/// The first tensor of `ty` whose name contains `part`.
fn find(file: &GgufFile, ty: GgmlType, part: &str) -> gguf::TensorInfo {
    file.header()
        .tensors
        .iter()
        .find(|t| t.ggml_type == ty && t.name.contains(part))
        .unwrap_or_else(|| panic!("no {ty} tensor named *{part}*"))
        .clone()
}

/// Relative error of quantizing near-float weights (a Q8_0 tensor of the same model, at most
/// `max_elems` of it, as rows of `row`) to `ty` afresh.
fn fresh_error(file: &GgufFile, q8_part: &str, ty: GgmlType, row: u64, max_elems: u64) -> f64 {
    let t = find(file, GgmlType::Q8_0, q8_part);
    let n = t.dims.iter().product::<u64>();
    let x = dequantize(GgmlType::Q8_0, file.tensor_data(&t), n).unwrap();
    let take = (n.min(max_elems) / row * row) as usize;
    let x = &x[..take];
    let q = quantize(ty, x, row, None).unwrap();
    let back = dequantize(ty, &q, take as u64).unwrap();
    rel_err(&back, x)
}

struct Outcome {
    identical_blocks: usize,
    blocks: usize,
    requant: f64,
}

fn round_trip(file: &GgufFile, t: &gguf::TensorInfo) -> Outcome {
    let ty = t.ggml_type;
    let n = t.dims.iter().product::<u64>();
    let orig = file.tensor_data(t);
    let x = dequantize(ty, orig, n).unwrap();
    assert!(x.iter().all(|v| v.is_finite()), "{}", t.name);
    let again = quantize(ty, &x, t.dims[0], None).unwrap();
    assert_eq!(again.len(), orig.len(), "{}", t.name);
    let bs = ty.type_size() as usize;
    let identical_blocks = orig
        .chunks(bs)
        .zip(again.chunks(bs))
        .filter(|(a, b)| a == b)
        .count();
    let y = dequantize(ty, &again, n).unwrap();
    Outcome {
        identical_blocks,
        blocks: orig.len() / bs,
        requant: rel_err(&y, &x),
    }
}

/// Round-trips every `ty` tensor of the model; the first one whose name contains `part` is
/// reported on its own. `identical`: every block must come back byte for byte; otherwise the
/// worst tensor's drift must stay under a tenth of the type's fresh quantization error.
fn check(path: &Path, ty: GgmlType, part: &str, q8_part: &str, fresh_row: u64, identical: bool) {
    let file = GgufFile::open(path).unwrap();
    let fresh = fresh_error(&file, q8_part, ty, fresh_row, 1 << 20);
    let first = find(&file, ty, part);
    let o = round_trip(&file, &first);
    println!(
        "{ty} {} {:?}: {}/{} blocks byte-identical, requant error {:.3e}",
        first.name, first.dims, o.identical_blocks, o.blocks, o.requant
    );
    let (mut tensors, mut same, mut blocks, mut worst) = (0, 0, 0, 0f64);
    for t in file.header().tensors.iter().filter(|t| t.ggml_type == ty) {
        let o = round_trip(&file, t);
        tensors += 1;
        same += o.identical_blocks;
        blocks += o.blocks;
        worst = worst.max(o.requant);
    }
    println!(
        "{ty} all {tensors} tensors: {same}/{blocks} blocks byte-identical ({:.2}%), worst requant error \
         ‖deq(requant) − deq(orig)‖/‖deq(orig)‖ = {worst:.3e}; fresh {ty} quantization error of \
         near-float weights = {fresh:.3e}; ratio {:.4}",
        100.0 * same as f64 / blocks as f64,
        worst / fresh,
    );
    if identical {
        assert_eq!(
            same, blocks,
            "{ty}: ggml's quantizer should reproduce every block"
        );
    } else {
        assert!(
            worst < 0.1 * fresh,
            "{ty}: requant error {worst:.3e} vs quantization error {fresh:.3e}"
        );
    }
}

#[test]
fn q4_1_smollm2_round_trips() {
    check(
        &util::smollm2(),
        GgmlType::Q4_1,
        "blk.0.attn_v",
        "token_embd",
        576,
        true,
    );
}

/// Q4_K and Q6_K are not idempotent in ggml's reference quantizer: on already-quantized data
/// its scale search can land on another scale for some blocks (0.08% of Gemma-3's Q4_K blocks,
/// 14% of its Q6_K blocks), so only the size of the drift is checked.
#[test]
fn q4_k_gemma3_round_trips() {
    check(
        &util::gemma3(),
        GgmlType::Q4_K,
        "blk.",
        "attn_v",
        2048,
        false,
    );
}

/// See above.
#[test]
fn q6_k_gemma3_round_trips() {
    check(
        &util::gemma3(),
        GgmlType::Q6_K,
        "blk.",
        "attn_v",
        2048,
        false,
    );
}

#[test]
fn importance_matrix_types_are_refused_without_one() {
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ1_S] {
        assert!(quantize_requires_imatrix(ty), "{ty}");
        let x = vec![0.5f32; 512];
        match quantize(ty, &x, 256, None) {
            Err(e @ CodecError::NeedsImatrix(_)) => {
                assert!(e.to_string().contains("importance matrix"), "{e}")
            }
            other => panic!("{ty}: expected NeedsImatrix, got {other:?}"),
        }
    }
    // With an importance vector the refusal is not about the importance matrix any more.
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0)
        .collect();
    let im = vec![1.0f32; 256];
    let q = quantize(GgmlType::IQ2_XXS, &x, 256, Some(&im)).expect("IQ2_XXS with an imatrix");
    assert_eq!(q.len(), 2 * GgmlType::IQ2_XXS.type_size() as usize);
    let back = dequantize(GgmlType::IQ2_XXS, &q, 512).unwrap();
    let err: f32 = back
        .iter()
        .zip(&x)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(
        err < 0.6 * norm,
        "IQ2_XXS round trip error {err} vs norm {norm}"
    );
    // Ordinary types need none.
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
    ] {
        assert!(!quantize_requires_imatrix(ty), "{ty}");
    }
}
