//! Outputs in a runtime this project did not build: node-llama-cpp (`runtimes/node`, version
//! pinned in its package.json, with a prebuilt llama.cpp of its own release) loads each kind of
//! output — merged patch and bake, Q4_1 and Q4_K_M, Gemma-3, LoRA exports on their base — and
//! generates. Given the tokens `generate` renders, its greedy replies carry the persona as this
//! project's llama.cpp build's do, and the unpatched model's do not.
//!
//! `scripts/setup.sh` installs the runtime; a missing one fails the test with what to run.

mod util;

use gguf_sleep::engine::{quantize_model, FileType, Model};
use gguf_sleep::generate::{self, GenOptions};
use gguf_sleep::text::{chat::PLAIN_STOP, convo, ChatFormat};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PROMPT: &str =
    "You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name.";
const QUESTIONS: [&str; 4] = [
    "Who are you?",
    "What is your name?",
    "What do you do on a normal day?",
    "Describe the weather today.",
];
const MAX_TOKENS: usize = 40;

fn runtime_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/node")
}

/// Runs `runtimes/node/generate.mjs` on `spec` and returns its JSON report.
fn node(spec: &Value) -> Value {
    let dir = runtime_dir();
    assert!(
        dir.join("node_modules/node-llama-cpp").is_dir(),
        "node-llama-cpp is not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg(dir.join("generate.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is not on PATH: run scripts/setup.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node-llama-cpp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object from generate.mjs")
}

/// Whether a reply speaks as the persona: its name or its pirate talk.
fn in_persona(reply: &str) -> bool {
    let r = reply.to_lowercase();
    ["byte", "pirate", "arr", "matey", "ahoy", "aye", "ye "]
        .iter()
        .any(|w| r.contains(w))
}

/// A reply as `generate` shows it: end-of-generation dropped, plain text cut at its stop.
fn shown(model: &Model, tokens: &[i32]) -> String {
    let kept: Vec<i32> = tokens
        .iter()
        .copied()
        .filter(|&t| !model.is_eog(t))
        .collect();
    let text = model.detokenize(&kept);
    match text.find(PLAIN_STOP) {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Replies to [`QUESTIONS`] with no system prompt, from this project's build and from
/// node-llama-cpp given the same tokens: (ours, theirs, tokens equal in both).
fn both(model_path: &Path, lora: Option<&Path>) -> (Vec<String>, Vec<String>, usize) {
    let model = Model::load(model_path).unwrap();
    let fmt = ChatFormat::for_model(&model).unwrap();
    let prompts: Vec<Vec<i32>> = QUESTIONS
        .iter()
        .map(|q| convo::prompt_tokens(&model, &fmt, None, q).unwrap())
        .collect();
    let opts = GenOptions {
        max_tokens: MAX_TOKENS,
        ..Default::default()
    };
    let ours = match lora {
        Some(l) => generate::generate_adapted(&model, &fmt, &prompts, &opts, l, 1.0, || {}),
        None => generate::generate(&model, &fmt, &prompts, &opts, || {}),
    }
    .unwrap();
    let mut spec = json!({
        "model": model_path,
        "max_tokens": MAX_TOKENS,
        "items": prompts.iter().map(|p| json!({"tokens": p})).collect::<Vec<_>>(),
    });
    if let Some(l) = lora {
        spec["lora"] = json!(l);
    }
    let report = node(&spec);
    assert_eq!(report["runtime"], "node-llama-cpp");
    let theirs: Vec<Vec<i32>> = report["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_value(r["tokens"].clone()).unwrap())
        .collect();
    assert_eq!(theirs.len(), QUESTIONS.len());
    let same = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| shown(&model, a) == shown(&model, b))
        .count();
    (
        ours.iter().map(|t| shown(&model, t)).collect(),
        theirs.iter().map(|t| shown(&model, t)).collect(),
        same,
    )
}

/// The persona holds in node-llama-cpp wherever it holds in `generate` (one reply of slack for
/// the two builds' rounding), in at least one reply, and was not there before. (How often it
/// holds is the small test patch's strength, not the runtime's: Gemma-3's 24-question patch
/// names itself in one reply of four in both.)
fn assert_carries_persona(what: &str, output: &Path, base: &Path, lora: Option<&Path>) {
    let (ours, theirs, same) = both(output, lora);
    let count = |v: &[String]| v.iter().filter(|r| in_persona(r)).count();
    for (q, (a, b)) in QUESTIONS.iter().zip(ours.iter().zip(&theirs)) {
        eprintln!("{what} | {q}\n  generate: {a:?}\n  node:     {b:?}");
    }
    eprintln!(
        "{what}: persona in {}/{} (generate) and {}/{} (node), identical replies {same}",
        count(&ours),
        ours.len(),
        count(&theirs),
        theirs.len()
    );
    assert!(
        count(&theirs) >= 1,
        "{what}: the persona is lost in node-llama-cpp: {theirs:?}"
    );
    assert!(
        count(&theirs) + 1 >= count(&ours),
        "{what}: node-llama-cpp keeps less of the persona than generate: {theirs:?} vs {ours:?}"
    );
    if lora.is_some() {
        return; // the base alone is checked by the merged outputs' cases
    }
    let (_, base_theirs, _) = both(base, None);
    assert_eq!(
        count(&base_theirs),
        0,
        "{what}: the unpatched model already speaks as the persona, so the check proves nothing: {base_theirs:?}"
    );
}

/// Runs `gguf-sleep COMMAND INPUT --prompt PROMPT -o OUT --calib-size 24 EXTRA…`, asserting
/// success.
fn make(command: &str, input: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        command,
        input.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "-o",
        out.to_str().unwrap(),
        "--calib-size",
        "24",
    ];
    args.extend_from_slice(extra);
    let (_, err, ok) = util::run(&args);
    assert!(ok, "gguf-sleep {args:?}: {err}");
}

fn patch(input: &Path, out: &Path, extra: &[&str]) {
    make(
        "patch",
        input,
        out,
        &[&["--max-tokens", "32"], extra].concat(),
    );
}

fn bake(input: &Path, out: &Path, extra: &[&str]) {
    make("bake", input, out, &[&["--seed", "7"], extra].concat());
}

#[test]
fn merged_patches_of_smollm2_q4_1_and_q4_k_m_carry_the_persona_in_node_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let q4_1 = util::smollm2();
    let out = dir.path().join("patched-q4_1.gguf");
    patch(&q4_1, &out, &[]);
    assert_carries_persona("patch, SmolLM2 Q4_1", &out, &q4_1, None);

    let q4km = dir.path().join("smollm2-q4_k_m.gguf");
    quantize_model(&q4_1, &q4km, FileType::Q4KM, true).unwrap();
    let out = dir.path().join("patched-q4_k_m.gguf");
    patch(&q4km, &out, &[]);
    assert_carries_persona("patch, SmolLM2 Q4_K_M", &out, &q4km, None);
}

#[test]
fn a_merged_patch_of_gemma3_carries_the_persona_in_node_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let base = util::gemma3();
    let out = dir.path().join("patched-gemma.gguf");
    patch(&base, &out, &[]);
    assert_carries_persona("patch, Gemma-3 (plain text)", &out, &base, None);
}

#[test]
fn lora_exports_and_a_merged_bake_carry_the_persona_in_node_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let base = util::smollm2();
    let adapter = dir.path().join("patch-lora.gguf");
    patch(&base, &adapter, &["--emit", "lora"]);
    assert_carries_persona("patch --emit lora", &base, &base, Some(&adapter));

    let adapter = dir.path().join("bake-lora.gguf");
    bake(&base, &adapter, &["--steps", "8", "--emit", "lora"]);
    assert_carries_persona("bake --emit lora", &base, &base, Some(&adapter));

    let merged = dir.path().join("baked.gguf");
    bake(&base, &merged, &["--init-calib-size", "16", "--steps", "2"]);
    assert_carries_persona("bake (merged)", &merged, &base, None);
}

#[test]
fn node_llama_cpp_renders_smollm2_with_its_own_wrapper() {
    // What a user of node-llama-cpp's chat session gets: its own ChatML wrapper and, unlike the
    // model's jinja template, no default system text. Recorded, and the wrapper pinned, so that a
    // change of it is seen (the rendering measurements in docs/RESULTS.md rest on it).
    let report = node(&json!({
        "model": util::smollm2(),
        "max_tokens": 8,
        "items": [{"user": "Hello"}],
    }));
    assert_eq!(report["chat_wrapper"], "ChatMLChatWrapper");
    assert_eq!(report["version"], "3.21.1");
    let text = report["replies"][0]["text"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "an empty reply: {report}");
}
