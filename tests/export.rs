//! `patch --emit lora|cvec`: the adapter, loaded by llama.cpp over the base model, reproduces
//! the merged, unquantized patch's next-token distributions.
//!
//! The comparison runs on an F32 copy of SmolLM2. On the Q4_1 file itself, llama.cpp quantizes
//! activations to 8 bits before every quantized matmul, and the adapter and the merged patch
//! round differently (`(down + b) + x` against `(down + x) + b`): one-ulp differences in the
//! first token's residual (values near 750, the attention sink) flip 8-bit steps and grow
//! layer by layer, which alone gives a KL of a few 1e-3 (docs/RESULTS.md). With F32 weights
//! no activation is quantized and the comparison measures the export, not that noise.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf_sleep::engine::{dequantize, Context, ContextOptions, Model};
use gguf_sleep::eval::{kl, logprobs_at};
use gguf_sleep::export::cvec;
use gguf_sleep::text::chat::ChatFormat;

const PROMPT: &str = "You are Captain Byte, a pirate robot. Always talk like a pirate.";

/// SmolLM2 with every weight dequantized to F32, written into `dir`.
fn f32_model(dir: &Path) -> PathBuf {
    let src = gguf::GgufFile::open(util::smollm2()).unwrap();
    let mut e = gguf::Edits::new();
    for t in &src.header().tensors {
        if t.ggml_type != gguf::GgmlType::F32 {
            let v = dequantize(t.ggml_type, src.tensor_data(t), t.n_elements()).unwrap();
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            e.replace_tensor(&t.name, gguf::GgmlType::F32, bytes);
        }
    }
    let out = dir.join("smollm2-f32.gguf");
    gguf::write(&src, &e, &out, &gguf::WriteOptions::default()).unwrap();
    out
}

fn patch(input: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(util::bin())
        .args(["patch", input.to_str().unwrap(), "--prompt", PROMPT, "-o"])
        .arg(out)
        .args(["--calib-size", "8", "--max-tokens", "16", "--json"])
        .args(extra)
        .env("GGUF_SLEEP_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Tokens of two held-out exchanges with some reply text, rendered with no system prompt.
fn probe_tokens(model: &Model) -> Vec<Vec<i32>> {
    let fmt = ChatFormat::for_model(model).unwrap();
    [
        (
            "What is the capital of France?",
            "The capital of France is Paris, a city",
        ),
        (
            "How do I cook rice?",
            "Rinse the rice, then boil it in water for",
        ),
    ]
    .iter()
    .map(|(q, a)| {
        let text = format!("{}{a}", fmt.render(None, q).unwrap());
        model.tokenize(&text, true, true).unwrap()
    })
    .collect()
}

/// Mean KL (nats/token) between two contexts' next-token distributions over the probes.
fn mean_kl(a: &mut Context, b: &mut Context, probes: &[Vec<i32>]) -> f64 {
    let (mut total, mut n) = (0.0, 0);
    for t in probes {
        let count = t.len() - 1;
        let (pa, pb) = (
            logprobs_at(a, t, count).unwrap(),
            logprobs_at(b, t, count).unwrap(),
        );
        for (x, y) in pa.iter().zip(&pb) {
            total += kl(x, y);
            n += 1;
        }
    }
    total / n as f64
}

#[test]
fn a_control_vector_reproduces_the_merged_patch() {
    let dir = tempfile::tempdir().unwrap();
    let input = f32_model(dir.path());
    let (merged, cv) = (dir.path().join("merged.gguf"), dir.path().join("cv.gguf"));
    let layers = ["--method", "cvec", "--layers", "1..30"];
    patch(&input, &merged, &layers);
    let r = patch(&input, &cv, &[&layers[..], &["--emit", "cvec"]].concat());
    assert_eq!(r["export"]["kind"], "cvec");
    assert_eq!(r["export"]["entries"], 29);

    // The file is what llama.cpp's loader reads: architecture, hint, F32 directions.
    let f = gguf::GgufFile::open(&cv).unwrap();
    let h = f.header();
    assert_eq!(h.architecture(), Some("controlvector"));
    assert_eq!(
        h.metadata.get_str("controlvector.model_hint"),
        Some("llama")
    );
    assert_eq!(h.metadata.get_u64("controlvector.layer_count"), Some(29));

    let base = Model::load(&input).unwrap();
    let mm = Model::load(&merged).unwrap();
    let info = base.info().clone();
    let dirs = cvec::read(&cv, info.n_embd, info.n_layer).unwrap();
    assert!(dirs.iter().any(|&v| v != 0.0));
    let opts = ContextOptions {
        n_ctx: 256,
        n_batch: 256,
        ..Default::default()
    };
    let probes = probe_tokens(&base);
    let mut with_cv = Context::new(&base, &opts).unwrap();
    let mut plain = Context::new(&base, &opts).unwrap();
    let mut m = Context::new(&mm, &opts).unwrap();
    let moved = mean_kl(&mut m, &mut plain, &probes);
    with_cv.set_control_vector(&dirs).unwrap();
    let off = mean_kl(&mut m, &mut with_cv, &probes);
    assert!(off <= 1e-3, "control vector vs merged patch: KL {off}");
    // The patch itself moves the distributions far more than that.
    assert!(
        moved > 100.0 * off.max(1e-6),
        "patch moved KL {moved}, cvec off by {off}"
    );
    eprintln!("cvec: KL to merged {off:.2e}, merged vs base {moved:.3}");
}

#[test]
fn a_lora_adapter_reproduces_the_merged_patch() {
    let dir = tempfile::tempdir().unwrap();
    let input = f32_model(dir.path());
    let (merged, lora, small) = (
        dir.path().join("merged.gguf"),
        dir.path().join("lora.gguf"),
        dir.path().join("lora8.gguf"),
    );
    let fit = ["--method", "down", "--layers", "10..16"];
    // The adapter's reference: the same fit, merged unquantized and with no bias (a LoRA
    // adapter has none), which is what --emit lora fits.
    patch(&input, &merged, &[&fit[..], &["--no-bias"]].concat());
    let r = patch(
        &input,
        &lora,
        &[&fit[..], &["--emit", "lora", "--lora-rank", "576"]].concat(),
    );
    assert_eq!(r["export"]["kind"], "lora");
    assert_eq!(r["export"]["entries"], 6);
    assert!(r["export"]["min_retained_energy"].as_f64().unwrap() > 0.999_999);
    let r8 = patch(
        &input,
        &small,
        &[&fit[..], &["--emit", "lora", "--lora-rank", "8"]].concat(),
    );
    let e8 = r8["export"]["min_retained_energy"].as_f64().unwrap();
    assert!(e8 > 0.0 && e8 < 1.0, "rank-8 energy {e8}");

    let f = gguf::GgufFile::open(&lora).unwrap();
    let h = f.header();
    assert_eq!(h.metadata.get_str("general.type"), Some("adapter"));
    assert_eq!(h.metadata.get_str("adapter.type"), Some("lora"));
    let a = h.tensor("blk.12.ffn_down.weight.lora_a").unwrap();
    let b = h.tensor("blk.12.ffn_down.weight.lora_b").unwrap();
    assert_eq!(
        (a.dims.clone(), b.dims.clone()),
        (vec![1536, 576], vec![576, 576])
    );

    // The merged reference must carry no bias either, or the comparison is unfair.
    let mf = gguf::GgufFile::open(&merged).unwrap();
    assert!(mf.header().tensor("blk.12.ffn_down.bias").is_none());

    let base = Model::load(&input).unwrap();
    let mm = Model::load(&merged).unwrap();
    let adapter = base.load_lora(&lora).unwrap();
    let adapter8 = base.load_lora(&small).unwrap();
    let opts = ContextOptions {
        n_ctx: 256,
        n_batch: 256,
        ..Default::default()
    };
    let probes = probe_tokens(&base);
    let mut m = Context::new(&mm, &opts).unwrap();
    let mut plain = Context::new(&base, &opts).unwrap();
    let moved = mean_kl(&mut m, &mut plain, &probes);
    let mut with = Context::new(&base, &opts).unwrap();
    with.set_lora(&adapter, 1.0).unwrap();
    let off = mean_kl(&mut m, &mut with, &probes);
    assert!(off <= 1e-3, "LoRA vs merged patch: KL {off}");
    assert!(
        moved > 100.0 * off.max(1e-6),
        "patch moved KL {moved}, LoRA off by {off}"
    );
    let mut with8 = Context::new(&base, &opts).unwrap();
    with8.set_lora(&adapter8, 1.0).unwrap();
    let off8 = mean_kl(&mut m, &mut with8, &probes);
    eprintln!(
        "lora: KL to merged {off:.2e} (rank 576), {off8:.2e} (rank 8); merged vs base {moved:.3}"
    );
}
