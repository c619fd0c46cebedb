//! Shared helpers for the integration tests: where the real models are.
#![allow(dead_code)]

use std::path::PathBuf;

/// Directory holding the test models (`GGUF_SLEEP_MODELS`, default `~/.cache/gguf-sleep`).
pub fn models_dir() -> PathBuf {
    std::env::var_os("GGUF_SLEEP_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/gguf-sleep")
        })
}

fn model(name: &str) -> PathBuf {
    let p = models_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

/// SmolLM2-135M-Instruct Q4_1 (llama architecture, chat template).
pub fn smollm2() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Gemma-3-270M Q4_K_M (gemma3 architecture, base model, no chat template).
pub fn gemma3() -> PathBuf {
    model("gemma-3-270m-q4_k_m.gguf")
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gguf-sleep"))
}

/// Runs the binary with `args` (and `GGUF_SLEEP_THREADS=1`), asserts success and parses its
/// standard output as one JSON value.
pub fn json_of<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("GGUF_SLEEP_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

/// Runs the binary with `args`: (stdout, stderr, success).
pub fn run(args: &[&str]) -> (String, String, bool) {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.success(),
    )
}

/// A short greedy reply of `model` to a fixed question, through `generate`.
pub fn greedy(model: &std::path::Path) -> String {
    greedy_with(model, &[])
}

/// [`greedy`] with `extra` arguments to `generate` (e.g. `--lora`).
pub fn greedy_with(model: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "generate",
        model.to_str().unwrap(),
        "--user",
        "Who are you and what do you like?",
        "--max-tokens",
        "24",
    ];
    args.extend_from_slice(extra);
    let (out, err, ok) = run(&args);
    assert!(ok, "generate {extra:?} failed: {err}");
    out
}

/// Asserts that the binary fails on `args` with one line on stderr containing `needle`.
pub fn assert_one_line_error(args: &[&str], needle: &str) {
    let (_, err, ok) = run(args);
    assert!(!ok, "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// An exchange rendered as at inference (with `system` or none), followed by `reply`: the
/// tokens and the reply length.
pub fn exchange(
    model: &gguf_sleep::engine::Model,
    system: Option<&str>,
    question: &str,
    reply: &str,
) -> (Vec<i32>, usize) {
    let fmt = gguf_sleep::text::chat::ChatFormat::for_model(model).unwrap();
    let mut t = gguf_sleep::text::convo::prompt_tokens(model, &fmt, system, question).unwrap();
    let r = model.tokenize(reply, false, false).unwrap();
    t.extend_from_slice(&r);
    (t, r.len())
}

/// llama.cpp's next-token log-probabilities after each of `tokens` but the last, with an
/// optional LoRA adapter at scale 1.
pub fn llama_logprobs(
    model: &gguf_sleep::engine::Model,
    tokens: &[i32],
    adapter: Option<&std::path::Path>,
) -> Vec<Vec<f32>> {
    use gguf_sleep::engine::{Context, ContextOptions};
    let a = adapter.map(|p| model.load_lora(p).unwrap());
    let n_ctx = (tokens.len() as u32).next_multiple_of(256);
    let mut ctx = Context::new(
        model,
        &ContextOptions {
            n_ctx,
            n_batch: n_ctx,
            ..Default::default()
        },
    )
    .unwrap();
    if let Some(a) = &a {
        ctx.set_lora(a, 1.0).unwrap();
    }
    gguf_sleep::eval::logprobs_at(&mut ctx, tokens, tokens.len() - 1).unwrap()
}

/// The bake student's next-token log-probabilities after each of `tokens` but the last.
pub fn student_logprobs(
    student: &gguf_sleep::bake::Student,
    tokens: &[i32],
    lora: &gguf_sleep::bake::LoraSet,
) -> Vec<Vec<f32>> {
    use candle_core::{Device, Tensor};
    let n = tokens.len() - 1;
    let t = Tensor::from_vec(
        tokens.iter().map(|&x| x as u32).collect::<Vec<_>>(),
        (1, tokens.len()),
        &Device::Cpu,
    )
    .unwrap();
    let idx = Tensor::from_vec((0..n as u32).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    let rows = student
        .logits(&t, &idx, lora)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    rows.iter()
        .map(|r| gguf_sleep::eval::log_softmax(r))
        .collect()
}

/// Mean per-position KL(a ‖ b) of two rows of log-probabilities each.
pub fn mean_kl(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| gguf_sleep::eval::kl(x, y))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// A generated model of `arch` (F16 matrices) whose next-token distributions are far from
/// uniform. F16, not a 4-bit type: llama.cpp rounds a k-quant matmul's input to 8 bits, an
/// error the sharpened logits magnify past what a graph check can tell apart from a mistake
/// (the real models check the quantized path).
pub fn generated(dir: &std::path::Path, arch: &str, rope_freqs: bool) -> std::path::PathBuf {
    use gguf_sleep::synth::{write_random, Dims};
    let tok = gguf::GgufFile::open(smollm2()).unwrap();
    let dims = Dims {
        sharpen: 6.0,
        rope_freqs,
        ..Dims::plain(arch, 2, 256, 512, [4, 2, 64])
    };
    let path = dir.join(format!("{arch}-{rope_freqs}.gguf"));
    write_random(&dims, &tok, &path, 11).unwrap();
    path
}
