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
    let (out, err, ok) = run(&[
        "generate",
        model.to_str().unwrap(),
        "--user",
        "Who are you and what do you like?",
        "--max-tokens",
        "24",
    ]);
    assert!(ok, "generate failed: {err}");
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
