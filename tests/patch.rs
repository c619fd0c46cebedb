//! `patch` on the real models: strength 0 is the identity, a patched file loads and generates,
//! only the tensors the method edits change, provenance is recorded, bad input is refused.

mod util;

use util::{assert_one_line_error, greedy, run};

use std::collections::BTreeSet;
use std::path::Path;

const PROMPT: &str = "You are Captain Byte, a pirate robot. Always talk like a pirate.";

/// Patch `model` into `out` with a small calibration set (10 questions and none built from the
/// prompt unless `extra` says); returns the JSON summary.
fn patch(model: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "patch",
        model.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "-o",
        out.to_str().unwrap(),
        "--max-tokens",
        "16",
        "--json",
    ];
    if !extra.contains(&"--calib-size") {
        args.extend_from_slice(&["--calib-size", "10"]);
    }
    if !extra.contains(&"--prompt-questions") {
        args.extend_from_slice(&["--prompt-questions", "0"]);
    }
    args.extend_from_slice(extra);
    let (stdout, stderr, ok) = run(&args);
    assert!(ok, "patch {extra:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("patch --json prints one JSON object")
}

/// Names of tensors whose bytes (or presence) differ between two files.
fn changed_tensors(a: &Path, b: &Path) -> BTreeSet<String> {
    let (fa, fb) = (
        gguf::GgufFile::open(a).unwrap(),
        gguf::GgufFile::open(b).unwrap(),
    );
    let mut out = BTreeSet::new();
    for t in &fb.header().tensors {
        if fa.tensor_bytes(&t.name) != fb.tensor_bytes(&t.name) {
            out.insert(t.name.clone());
        }
    }
    for t in &fa.header().tensors {
        if fb.header().tensor(&t.name).is_none() {
            out.insert(t.name.clone());
        }
    }
    out
}

#[test]
fn strength_zero_is_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("zero.gguf");
    let summary = patch(&m, &out, &["--strength", "0", "--parallel"]);
    assert_eq!(summary["tensors"].as_array().unwrap().len(), 0);
    assert!(
        changed_tensors(&m, &out).is_empty(),
        "strength 0 changed tensors"
    );
    assert_eq!(greedy(&m), greedy(&out), "strength 0 changed greedy output");
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.header().metadata.get_str("sleep.method"), Some("down"));
    assert_eq!(
        f.header()
            .metadata
            .get("sleep.strength")
            .and_then(|v| v.as_f32()),
        Some(0.0)
    );
}

#[test]
fn down_edits_only_its_tensors_and_the_result_generates() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("down.gguf");
    let summary = patch(&m, &out, &["--layers", "10..14"]);
    let reported: BTreeSet<String> = summary["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (10..14)
        .flat_map(|l| {
            [
                format!("blk.{l}.ffn_down.weight"),
                format!("blk.{l}.ffn_down.bias"),
            ]
        })
        .collect();
    assert_eq!(reported, expected);
    assert_eq!(changed_tensors(&m, &out), expected);
    // Requantized to the original type.
    let f = gguf::GgufFile::open(&out).unwrap();
    let src = gguf::GgufFile::open(&m).unwrap();
    let t = f.header().tensor("blk.10.ffn_down.weight").unwrap();
    assert_eq!(
        t.ggml_type,
        src.header()
            .tensor("blk.10.ffn_down.weight")
            .unwrap()
            .ggml_type
    );
    assert_eq!(f.header().metadata.get_str("sleep.layers"), Some("10..14"));
    let sha = f.header().metadata.get_str("sleep.prompt_sha256").unwrap();
    assert_eq!(sha.len(), 64);
    // It loads in llama.cpp and generates something different from the original.
    let reply = greedy(&out);
    assert!(!reply.trim().is_empty());
    assert_ne!(reply, greedy(&m));
    // inspect shows the provenance.
    let (text, err, ok) = run(&["inspect", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        text.contains("sleep.method") && text.contains("down"),
        "{text}"
    );
}

#[test]
fn vector_and_sleep_write_loadable_biases() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    for (method, bias) in [("vector", "attn_output.bias"), ("sleep", "attn_v.bias")] {
        let out = dir.path().join(format!("{method}.gguf"));
        let extra: &[&str] = if method == "sleep" {
            &[]
        } else {
            &["--parallel"]
        };
        patch(
            &m,
            &out,
            &[&["--method", method, "--layers", "0..30"], extra].concat(),
        );
        let changed = changed_tensors(&m, &out);
        let expected: BTreeSet<String> = (0..30).map(|l| format!("blk.{l}.{bias}")).collect();
        assert_eq!(changed, expected, "{method}");
        assert!(!greedy(&out).trim().is_empty());
    }
}

#[test]
fn output_rounding_keeps_more_of_the_edit_than_nearest_rounding() {
    // Parallel fits of the same layers are identical in both runs; only the rounding differs.
    // With the plain-text anchors too: their rows enter the Gram the rounding is searched on.
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let error = |rounding: &str, anchors: &str| -> (f64, usize) {
        let out = dir.path().join(format!("{rounding}-{anchors}.gguf"));
        let s = patch(
            &m,
            &out,
            &[
                "--parallel",
                "--layers",
                "10..13",
                "--calib-size",
                "20",
                "--anchors",
                anchors,
                "--rounding",
                rounding,
            ],
        );
        let mats: Vec<&serde_json::Value> = s["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().ends_with(".weight"))
            .collect();
        assert_eq!(mats.len(), 3);
        let moved = mats
            .iter()
            .map(|t| t["rounding"]["moved"].as_u64().unwrap_or(0) as usize)
            .sum();
        let e = mats
            .iter()
            .map(|t| t["output_error"].as_f64().expect("output error reported"))
            .sum::<f64>()
            / 3.0;
        assert!(!greedy(&out).trim().is_empty());
        (e, moved)
    };
    for anchors in ["0", "20"] {
        let (near, near_moved) = error("nearest", anchors);
        let (chosen, moved) = error("output", anchors);
        assert_eq!(near_moved, 0);
        assert!(
            moved > 0,
            "output rounding moved no weight (anchors {anchors})"
        );
        assert!(
            chosen < 0.9 * near,
            "output error of the stored change with {anchors} anchors: output rounding {chosen}, \
             nearest {near}"
        );
    }
}

#[test]
fn edit_type_f16_stores_edits_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("m.gguf");
    let s = patch(
        &m,
        &out,
        &[
            "--method",
            "matrix",
            "--layers",
            "3..5",
            "--edit-type",
            "f16",
        ],
    );
    for t in s["tensors"].as_array().unwrap() {
        assert_eq!(t["ggml_type"], "f16");
        // f16 keeps the edit almost exactly.
        assert!(t["stored_cos"].as_f64().unwrap() > 0.99, "{t}");
    }
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(
        f.header().tensor("blk.3.ffn_up.weight").unwrap().ggml_type,
        gguf::GgmlType::F16
    );
    assert!(!greedy(&out).trim().is_empty());
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let ms = m.to_str().unwrap();
    let out = dir.path().join("o.gguf");
    let os = out.to_str().unwrap();
    assert_one_line_error(&["patch", ms, "--prompt", "  ", "-o", os], "empty");
    let long = "Always answer like a pirate. ".repeat(2000);
    assert_one_line_error(&["patch", ms, "--prompt", &long, "-o", os], "context");
    assert_one_line_error(
        &[
            "patch", ms, "--prompt", PROMPT, "-o", os, "--layers", "20..40",
        ],
        "--layers",
    );
    assert_one_line_error(&["patch", ms, "--prompt", PROMPT, "-o", ms], "input");
    // An architecture gguf-sleep does not know: same weights, renamed architecture.
    let src = gguf::GgufFile::open(&m).unwrap();
    let alien = dir.path().join("alien.gguf");
    let mut edits = gguf::Edits::new();
    edits.set_metadata("general.architecture", "alien");
    gguf::write(&src, &edits, &alien, &gguf::WriteOptions::default()).unwrap();
    assert_one_line_error(
        &[
            "patch",
            alien.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "-o",
            os,
        ],
        "architecture",
    );
    assert!(!out.exists(), "a failed patch left an output file");
}

/// The written edits do what the fit says: after sequentially patching three layers (`down`, f32
/// storage, so no requantization noise), the last one's output in the unprompted run of a
/// calibration exchange, computed by llama.cpp from the tokens through the whole patched file,
/// moves toward the prompted run's. (Each layer is fitted on a residual stream the fit keeps and
/// advances itself; a stream that disagreed with the patched file would miss here.)
#[test]
fn a_fitted_layer_moves_toward_the_prompted_run() {
    use gguf_sleep::capture::{self, Kind, Request};
    use gguf_sleep::engine::{Context, ContextOptions, Model};
    use gguf_sleep::generate::GenOptions;

    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("one.gguf");
    let l = 12;
    let layers = format!("{}..{}", l - 2, l + 1);
    patch(&m, &out, &["--layers", &layers, "--edit-type", "f32"]);

    let base = Model::load(&m).unwrap();
    let questions: Vec<String> = gguf_sleep::text::lines(gguf_sleep::text::questions::CALIBRATION)
        .into_iter()
        .take(10)
        .collect();
    let gen = GenOptions {
        max_tokens: 16,
        ..Default::default()
    };
    let pairs = gguf_sleep::material::build(
        &base,
        PROMPT,
        &questions,
        &[gguf_sleep::text::Rendering::Template],
        &gen,
        None,
        || {},
    )
    .unwrap();
    let patched = Model::load(&out).unwrap();
    let opts = ContextOptions {
        capture: true,
        ..Default::default()
    };
    let req = Request::new(&[Kind::BlockOut], [l]);
    let (mut before, mut after) = (0f64, 0f64);
    for p in &pairs {
        let a = p.align;
        let rows = |model: &Model, toks: &[i32], start: usize| -> Vec<f32> {
            let mut ctx = Context::new(model, &opts).unwrap();
            let c = capture::run(&mut ctx, toks, &req).unwrap();
            let mx = &c.tensors[&(Kind::BlockOut, l)];
            mx.data[start * mx.cols..(start + a.len) * mx.cols].to_vec()
        };
        let target = rows(&base, &p.prompted, a.prompted_start);
        let u = rows(&base, &p.unprompted, a.unprompted_start);
        let v = rows(&patched, &p.unprompted, a.unprompted_start);
        let d2 = |x: &[f32]| -> f64 {
            x.iter()
                .zip(&target)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum()
        };
        before += d2(&u);
        after += d2(&v);
    }
    assert!(
        after < 0.8 * before,
        "layer {l}: distance to the prompted run {after:.1} after patching vs {before:.1} before"
    );
}

#[test]
fn a_patched_model_can_be_patched_again_and_both_are_recorded() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    let fit = ["--method", "cvec", "--layers", "1..4"];
    patch(&util::smollm2(), &first, &fit);
    let fact = "The secret password is 'blue falcon'.";
    let (_, err, ok) = run(&[
        &["patch", first.to_str().unwrap(), "--prompt", fact],
        &[
            "-o",
            second.to_str().unwrap(),
            "--calib-size",
            "10",
            "--max-tokens",
            "16",
        ][..],
        &fit[..],
    ]
    .concat());
    assert!(ok, "second patch failed: {err}");

    let (f1, f2) = (
        gguf::GgufFile::open(&first).unwrap(),
        gguf::GgufFile::open(&second).unwrap(),
    );
    // The second patch adds to the biases the first one created instead of adding new ones.
    assert_eq!(f1.header().tensors.len(), f2.header().tensors.len());
    let want: BTreeSet<String> = (1..4).map(|l| format!("blk.{l}.ffn_down.bias")).collect();
    assert_eq!(changed_tensors(&first, &second), want);

    let history = |f: &gguf::GgufFile| -> Vec<String> {
        match f.header().metadata.get("sleep.history") {
            Some(gguf::Value::Array(a)) => a
                .items
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            other => panic!("no sleep.history: {other:?}"),
        }
    };
    let (h1, h2) = (history(&f1), history(&f2));
    assert_eq!(h1.len(), 1);
    assert_eq!(h2.len(), 2);
    assert_eq!(h2[0], h1[0]);
    let sha = |s: &str| format!("{:x}", sha2::Sha256::digest(s.as_bytes()));
    assert!(h1[0].contains(&sha(PROMPT)), "{h1:?}");
    assert!(
        h2[1].contains(&sha(fact)) && h2[1].contains("method=cvec"),
        "{h2:?}"
    );
    assert_eq!(
        f2.header().metadata.get_str("sleep.prompt_sha256"),
        Some(sha(fact).as_str())
    );
    assert!(!greedy(&second).trim().is_empty());
}

#[test]
fn matrix_edits_only_up_and_gate_and_the_result_generates() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("matrix.gguf");
    patch(&m, &out, &["--method", "matrix", "--layers", "6..8"]);
    let expected: BTreeSet<String> = (6..8)
        .flat_map(|l| {
            [
                format!("blk.{l}.ffn_up.weight"),
                format!("blk.{l}.ffn_gate.weight"),
            ]
        })
        .collect();
    assert_eq!(changed_tensors(&m, &out), expected);
    assert!(!greedy(&out).trim().is_empty());
}

/// `--renderings`: calibration conversations cycle through the renderings of the unprompted
/// side; the prompted side, the reply and the part they share stay the same, so every rendering
/// is fitted toward the same prompted run.
#[test]
fn calibration_conversations_cycle_through_the_renderings() {
    use gguf_sleep::engine::Model;
    use gguf_sleep::generate::GenOptions;
    use gguf_sleep::text::{convo, ChatFormat, Rendering};

    let base = Model::load(&util::smollm2()).unwrap();
    let fmt = ChatFormat::for_model(&base).unwrap();
    let q = "What is the tallest mountain?".to_string();
    let questions = vec![q.clone(); 6];
    let reply = base
        .tokenize(" Arr, that be Everest.", false, false)
        .unwrap();
    let replies = vec![reply.clone(); 6];
    let pairs = gguf_sleep::material::build(
        &base,
        PROMPT,
        &questions,
        &Rendering::ALL,
        &GenOptions::default(),
        Some(&replies),
        || {},
    )
    .unwrap();
    for (i, p) in pairs.iter().enumerate() {
        let r = Rendering::ALL[i % 3];
        assert_eq!(p.rendering, r);
        let mut want = convo::prompt_tokens(&base, &fmt, r.system(), &q).unwrap();
        want.extend_from_slice(&reply);
        assert_eq!(p.unprompted, want, "conversation {i} ({r})");
        assert_eq!(p.prompted, pairs[0].prompted);
        let shared = &p.unprompted[p.align.unprompted_start..];
        assert_eq!(shared.len(), p.align.len);
        assert!(
            base.detokenize(shared).contains(&q),
            "the question is not in the fitted part"
        );
        let text = base.detokenize(&p.unprompted);
        assert_eq!(
            text.contains(gguf_sleep::text::rendering::GENERIC_SYSTEM),
            r == Rendering::Generic,
            "{text}"
        );
    }
    assert_ne!(pairs[0].unprompted, pairs[1].unprompted);
}

/// `--prompt-questions`: questions built from the prompt's own words are asked after the
/// calibration set, counted in the summary and in the recorded calibration size.
#[test]
fn questions_built_from_the_prompt_join_the_calibration_set() {
    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let out = dir.path().join("pq.gguf");
    let built = gguf_sleep::text::questions::about_prompt(PROMPT, 6);
    assert_eq!(built.len(), 6, "{built:?}");
    assert!(built[0].contains("Captain"), "{built:?}");
    let s = patch(
        &m,
        &out,
        &[
            "--calib-size",
            "4",
            "--prompt-questions",
            "6",
            "--layers",
            "10..12",
        ],
    );
    assert_eq!(s["questions"], 10);
    let f = gguf::GgufFile::open(&out).unwrap();
    assert_eq!(
        f.header()
            .metadata
            .get("sleep.calibration_size")
            .and_then(|v| v.as_u64()),
        Some(10)
    );
}

#[test]
fn anchors_keep_plain_text_closer_to_the_unpatched_model() {
    use gguf_sleep::capture::{self, Kind, Request};
    use gguf_sleep::engine::{Context, ContextOptions, Model};

    let dir = tempfile::tempdir().unwrap();
    let m = util::smollm2();
    let l = 12;
    let layers = format!("{}..{}", l - 2, l + 1);
    let common = ["--layers", layers.as_str(), "--edit-type", "f32"];
    let plain = dir.path().join("plain.gguf");
    let anchored = dir.path().join("anchored.gguf");
    // Without anchors, and with the default (every built-in paragraph).
    let s0 = patch(&m, &plain, &[&common[..], &["--anchors", "0"]].concat());
    let s1 = patch(&m, &anchored, &common);
    assert_eq!(s0["anchor_tokens"], 0);
    let extra = s1["anchor_tokens"].as_u64().unwrap();
    assert!(extra > 200, "{extra} plain-text tokens");
    assert_eq!(
        s1["tokens"].as_u64().unwrap(),
        s0["tokens"].as_u64().unwrap() + extra
    );
    let f = gguf::GgufFile::open(&anchored).unwrap();
    let recorded = f
        .header()
        .metadata
        .get("sleep.anchors")
        .and_then(|v| v.as_u64());
    assert_eq!(recorded, Some(20));

    // The block output on the anchor paragraphs, from their second token on (what the anchors
    // fit; the first, an attention sink, is fitted by neither patch and its outsized row
    // would swamp the sum): how far each patch moved it from the base's.
    let opts = ContextOptions {
        capture: true,
        ..Default::default()
    };
    let req = Request::new(&[Kind::BlockOut], [l]);
    let out = |model: &Model, toks: &[i32]| -> Vec<f32> {
        let mut ctx = Context::new(model, &opts).unwrap();
        let o = &capture::run(&mut ctx, toks, &req).unwrap().tensors[&(Kind::BlockOut, l)];
        o.data[o.cols..].to_vec()
    };
    let (base, p0, p1) = (
        Model::load(&m).unwrap(),
        Model::load(&plain).unwrap(),
        Model::load(&anchored).unwrap(),
    );
    let (mut moved0, mut moved1) = (0f64, 0f64);
    for text in gguf_sleep::text::anchors::paragraphs(20) {
        let toks = base.tokenize(text, true, false).unwrap();
        let b = out(&base, &toks);
        let d2 = |x: Vec<f32>| -> f64 {
            x.iter()
                .zip(&b)
                .map(|(a, c)| ((a - c) as f64).powi(2))
                .sum()
        };
        moved0 += d2(out(&p0, &toks));
        moved1 += d2(out(&p1, &toks));
    }
    assert!(
        moved1 < 0.8 * moved0,
        "plain text moved {moved1:.1} with anchors against {moved0:.1} without"
    );
}
