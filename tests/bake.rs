//! `bake` on the real models through the command line: strength 0 is the identity, an exported
//! adapter loads in llama.cpp, changes the output and matches the student, merged output edits
//! only the adapted matrices and records its provenance, a warm start trains on top of the
//! patched model, trained bias changes are stored in F32, a refit merge moves the stored model
//! toward its adapter, generated qwen2, qwen3 and Llama-3 files bake and their adapters load, bad
//! input is a one-line error.

mod util;

use util::{assert_one_line_error, exchange, greedy, greedy_with, mean_kl, run, student_logprobs};

use std::path::Path;

use gguf_sleep::bake::{lora, student::Student};
use gguf_sleep::engine::Model;

const PROMPT: &str = "You are Captain Byte, a pirate robot. Always talk like a pirate.";

/// A small, fast bake of `model` into `out`; returns the JSON summary.
fn bake(model: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bake",
        model.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "-o",
        out.to_str().unwrap(),
        "--calib-size",
        "10",
        "--trajectories",
        "1",
        "--max-tokens",
        "24",
        "--batch",
        "4",
        "--rank",
        "4",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (stdout, stderr, ok) = run(&args);
    assert!(ok, "bake {extra:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("bake --json prints one JSON object")
}

/// The kinds (`attn_q`, `ffn_down`, …) of the input's tensors whose bytes differ in `out`;
/// each must have kept its type.
fn changed_kinds(model: &Path, out: &Path) -> std::collections::BTreeSet<String> {
    let (a, b) = (
        gguf::GgufFile::open(model).unwrap(),
        gguf::GgufFile::open(out).unwrap(),
    );
    let mut kinds = std::collections::BTreeSet::new();
    for t in &a.header().tensors {
        if a.tensor_bytes(&t.name) != b.tensor_bytes(&t.name) {
            let stored = b.header().tensor(&t.name).unwrap().ggml_type;
            assert_eq!(stored, t.ggml_type, "{} changed type", t.name);
            kinds.insert(t.name.split('.').nth(2).unwrap_or("").to_string());
        }
    }
    kinds
}

/// llama.cpp's log-probabilities over a fixed unprompted exchange, with an optional adapter.
fn llama_logprobs(model: &Path, adapter: Option<&Path>) -> (Vec<i32>, Vec<Vec<f32>>) {
    let m = Model::load(model).unwrap();
    let (t, _) = exchange(
        &m,
        None,
        "What do you do on a rainy day?",
        "I read a book and drink some tea by the window.",
    );
    let lp = util::llama_logprobs(&m, &t, adapter);
    (t, lp)
}

#[test]
fn strength_zero_is_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("zero.gguf");
    let s = bake(&m, &out, &["--steps", "1", "--strength", "0"]);
    assert_eq!(
        s["tensors"].as_array().unwrap().len(),
        0,
        "strength 0 stored tensors"
    );
    let (a, b) = (
        gguf::GgufFile::open(&m).unwrap(),
        gguf::GgufFile::open(&out).unwrap(),
    );
    for t in &a.header().tensors {
        assert_eq!(
            a.tensor_bytes(&t.name),
            b.tensor_bytes(&t.name),
            "{} changed",
            t.name
        );
    }
    assert_eq!(greedy(&m), greedy(&out), "strength 0 changed greedy output");
    assert_eq!(b.header().metadata.get_str("sleep.method"), Some("bake"));
}

#[test]
fn exported_adapter_loads_in_llama_cpp_changes_the_output_and_matches_the_student() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("a.lora.gguf");
    let s = bake(
        &m,
        &out,
        &[
            "--steps",
            "3",
            "--lr",
            "1e-2",
            "--emit",
            "lora",
            "--targets",
            "mlp",
        ],
    );
    let curve = s["curve"].as_array().unwrap();
    let (first, last) = (&curve[0]["val_kl"], &curve[curve.len() - 1]["val_kl"]);
    assert!(
        last.as_f64() < first.as_f64(),
        "training did not lower the validation KL: {s}"
    );
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.header().metadata.get_str("general.type"), Some("adapter"));
    assert_eq!(
        f.header().tensors.len(),
        2 * 3 * 30,
        "a/b for gate, up, down of 30 layers"
    );

    let (tokens, base) = llama_logprobs(&m, None);
    let (_, adapted) = llama_logprobs(&m, Some(&out));
    let change = mean_kl(&base, &adapted);
    assert!(
        change > 1e-3,
        "the adapter changes nothing in llama.cpp: KL {change}"
    );

    // The student with the same adapter predicts what llama.cpp predicts with it.
    let set = lora::read_adapter(&out).unwrap();
    let student = Student::load(&gguf::GgufFile::open(&m).unwrap()).unwrap();
    let ours = student_logprobs(&student, &tokens, &set);
    let gap = mean_kl(&adapted, &ours);
    eprintln!("adapter: KL(base ‖ adapted) {change:.4}, KL(llama.cpp ‖ student) {gap:.5}");
    assert!(
        gap < 0.01 && gap < change / 3.0,
        "student and llama.cpp disagree: {gap} (change {change})"
    );

    // `generate --lora`: at scale 0 the base model's reply, scaled up a different one.
    let a = out.to_str().unwrap();
    let plain = greedy(&m);
    assert_eq!(greedy_with(&m, &["--lora", a, "--lora-scale", "0"]), plain);
    assert_ne!(greedy_with(&m, &["--lora", a, "--lora-scale", "8"]), plain);
}

#[test]
fn merged_bake_edits_only_adapted_matrices_records_provenance_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("b.gguf");
    let s = bake(
        &m,
        &out,
        &[
            "--init",
            "none",
            "--steps",
            "2",
            "--lr",
            "1e-2",
            "--targets",
            "attn",
            "--qat-from",
            "1",
            "--qat-every",
            "1",
        ],
    );
    assert!(!s["tensors"].as_array().unwrap().is_empty());
    let changed = changed_kinds(&m, &out);
    assert!(!changed.is_empty(), "nothing changed");
    for kind in changed {
        assert!(
            ["attn_q", "attn_k", "attn_v", "attn_output"].contains(&kind.as_str()),
            "{kind} changed but has no adapter"
        );
    }
    let b = gguf::GgufFile::open(&out).unwrap();
    let meta = &b.header().metadata;
    assert_eq!(meta.get_str("sleep.method"), Some("bake"));
    assert!(meta.get_str("sleep.bake").unwrap().contains("targets=attn"));
    assert_eq!(meta.get_str("sleep.prompt_sha256").map(str::len), Some(64));
    assert!(!greedy(&out).trim().is_empty());
}

#[test]
fn trained_bias_changes_are_stored_exactly_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("bias.gguf");
    bake(
        &m,
        &out,
        &[
            "--init",
            "none",
            "--steps",
            "2",
            "--lr",
            "1e-2",
            "--targets",
            "mlp",
            "--no-qat",
            "--bias",
        ],
    );
    let (a, b) = (
        gguf::GgufFile::open(&m).unwrap(),
        gguf::GgufFile::open(&out).unwrap(),
    );
    let n_layer = a.header().arch_u64("block_count").unwrap();
    for l in 0..n_layer {
        for kind in gguf_sleep::bake::BIAS_KINDS {
            let name = format!("blk.{l}.{kind}.bias");
            assert!(a.header().tensor(&name).is_none(), "{name} in the input");
            let t = b
                .header()
                .tensor(&name)
                .unwrap_or_else(|| panic!("no {name}"));
            assert_eq!(t.ggml_type, gguf::GgmlType::F32, "{name}");
            let v: Vec<f32> = b
                .tensor_bytes(&name)
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert!(v.iter().any(|&x| x != 0.0), "{name} is zero after training");
        }
    }
    assert!(b
        .header()
        .metadata
        .get_str("sleep.bake")
        .unwrap()
        .contains("bias=true"));
    assert!(!greedy(&out).trim().is_empty());
}

#[test]
fn refit_merge_moves_the_stored_model_toward_its_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("refit.gguf");
    let adapter = dir.path().join("refit.lora.gguf");
    bake(
        &m,
        &out,
        &[
            "--merge",
            "refit",
            "--steps",
            "3",
            "--lr",
            "1e-2",
            "--save-adapter",
            adapter.to_str().unwrap(),
        ],
    );
    // Only what the patch's `down` fit stores changed, each in its own type.
    assert_eq!(
        changed_kinds(&m, &out).into_iter().collect::<Vec<_>>(),
        ["ffn_down"]
    );
    let b = gguf::GgufFile::open(&out).unwrap();
    let meta = b.header().metadata.get_str("sleep.bake").unwrap();
    assert!(
        meta.contains("merge=refit") && meta.contains("init=none"),
        "{meta}"
    );
    // The stored model is closer to the adapted model than the unmodified one is.
    let (_, adapted) = llama_logprobs(&m, Some(&adapter));
    let (_, base) = llama_logprobs(&m, None);
    let (_, refit) = llama_logprobs(&out, None);
    let (from_base, from_refit) = (mean_kl(&adapted, &base), mean_kl(&adapted, &refit));
    eprintln!("KL to the adapted model: base {from_base:.4}, refit {from_refit:.4}");
    assert!(
        from_base > 1e-3,
        "the adapter changes too little: {from_base}"
    );
    assert!(
        from_refit < from_base,
        "the refit moved away from its adapter: {from_refit} >= {from_base}"
    );
}

#[test]
fn warm_start_trains_on_top_of_the_patched_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("w.gguf");
    let s = bake(
        &m,
        &out,
        &["--steps", "2", "--targets", "attn", "--init", "patch"],
    );
    // The curve starts from the patched model, measured against the unmodified one.
    let init = s["init_recovery"].as_f64().expect("init_recovery reported");
    let first = &s["curve"][0];
    assert_eq!(first["step"], 0);
    assert!(
        (first["val_recovery"].as_f64().unwrap() - init).abs() < 1e-9,
        "{s}"
    );
    assert!(
        init > 0.1,
        "the patched model should already recover part of the prompt's effect: {s}"
    );
    // The output is the patched model (ffn_down weights and created biases) with the trained
    // attention adapters merged; nothing else differs from the input.
    let (a, b) = (
        gguf::GgufFile::open(&m).unwrap(),
        gguf::GgufFile::open(&out).unwrap(),
    );
    let (mut attn, mut down) = (0, 0);
    for t in &a.header().tensors {
        if a.tensor_bytes(&t.name) != b.tensor_bytes(&t.name) {
            match t.name.split('.').nth(2).unwrap_or("") {
                "attn_q" | "attn_k" | "attn_v" | "attn_output" => attn += 1,
                "ffn_down" => down += 1,
                _ => panic!("{} changed but neither patch nor bake edits it", t.name),
            }
        }
    }
    assert!(attn > 0 && down > 0, "attn {attn} ffn_down {down} changed");
    assert!(b.header().tensor("blk.0.ffn_down.bias").is_some());
    let history = match b.header().metadata.get("sleep.history") {
        Some(gguf::Value::Array(h)) => h
            .items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect::<Vec<_>>(),
        other => panic!("no sleep.history: {other:?}"),
    };
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].contains("method=down"), "{history:?}");
    assert!(
        history[1].contains("method=bake") && history[1].contains("init=patch"),
        "{history:?}"
    );
    assert!(!greedy(&out).trim().is_empty());
}

#[test]
fn gemma3_bakes_and_the_adapter_loads() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::gemma3();
    let out = dir.path().join("g.lora.gguf");
    let s = bake(
        &m,
        &out,
        &[
            "--steps",
            "2",
            "--lr",
            "2e-3",
            "--emit",
            "lora",
            "--targets",
            "mlp",
            "--top-k",
            "64",
        ],
    );
    let curve = s["curve"].as_array().unwrap();
    assert!(
        curve[curve.len() - 1]["val_kl"].as_f64() < curve[0]["val_kl"].as_f64(),
        "{s}"
    );
    let (_, base) = llama_logprobs(&m, None);
    let (_, adapted) = llama_logprobs(&m, Some(&out));
    assert!(
        mean_kl(&base, &adapted) > 1e-4,
        "the adapter changes nothing"
    );
}

#[test]
fn generated_qwen2_qwen3_and_llama3_files_bake_and_their_adapters_load() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, freqs) in [("qwen2", false), ("qwen3", false), ("llama", true)] {
        let m = util::generated(dir.path(), arch, freqs);
        let out = dir.path().join(format!("{arch}.lora.gguf"));
        let s = bake(
            &m,
            &out,
            &["--steps", "2", "--lr", "1e-2", "--emit", "lora"],
        );
        let curve = s["curve"].as_array().unwrap();
        assert!(
            curve
                .iter()
                .all(|p| p["val_kl"].as_f64().is_some_and(f64::is_finite)),
            "{arch}: {s}"
        );
        let (_, base) = llama_logprobs(&m, None);
        let (_, adapted) = llama_logprobs(&m, Some(&out));
        assert!(
            mean_kl(&base, &adapted) > 1e-6,
            "{arch}: the adapter changes nothing"
        );
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let ms = m.to_str().unwrap();
    let out = dir.path().join("o.gguf");
    let os = out.to_str().unwrap();
    assert_one_line_error(&["bake", ms, "--prompt", "  ", "-o", os], "empty");
    let long = "Always answer like a pirate. ".repeat(2000);
    assert_one_line_error(&["bake", ms, "--prompt", &long, "-o", os], "context");
    assert_one_line_error(&["bake", ms, "--prompt", PROMPT, "-o", ms], "input");
    assert_one_line_error(
        &["bake", ms, "--prompt", PROMPT, "-o", os, "--rank", "0"],
        "rank",
    );
    assert_one_line_error(
        &[
            "bake",
            ms,
            "--prompt",
            PROMPT,
            "-o",
            os,
            "--init-calib-size",
            "0",
        ],
        "init-calib-size",
    );
    assert_one_line_error(
        &[
            "bake", ms, "--prompt", PROMPT, "-o", os, "--init", "patch", "--emit", "lora",
        ],
        "merged",
    );
    assert_one_line_error(
        &[
            "bake", ms, "--prompt", PROMPT, "-o", os, "--bias", "--emit", "lora",
        ],
        "adapter file cannot carry",
    );
    assert_one_line_error(
        &[
            "bake", ms, "--prompt", PROMPT, "-o", os, "--merge", "refit", "--init", "patch",
        ],
        "--init none",
    );
    let g = util::gemma3();
    assert_one_line_error(
        &[
            "bake",
            g.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "-o",
            os,
            "--bias",
        ],
        "no attn_output or ffn_down bias",
    );
    let src = gguf::GgufFile::open(&m).unwrap();
    let alien = dir.path().join("alien.gguf");
    let mut edits = gguf::Edits::new();
    edits.set_metadata("general.architecture", "alien");
    gguf::write(&src, &edits, &alien, &gguf::WriteOptions::default()).unwrap();
    assert_one_line_error(
        &[
            "bake",
            alien.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "-o",
            os,
        ],
        "architecture",
    );
    let truncated = dir.path().join("cut.gguf");
    std::fs::write(&truncated, &std::fs::read(&m).unwrap()[..4096]).unwrap();
    assert_one_line_error(
        &[
            "bake",
            truncated.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "-o",
            os,
        ],
        "",
    );
    assert!(!out.exists(), "a failed bake left an output file");
}
