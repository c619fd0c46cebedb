//! `generate` and `eval` through the command line, on the real models.

mod util;

use std::process::Command;

fn run(args: &[&str]) -> (String, String, bool) {
    let out = Command::new(util::bin()).args(args).output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.success(),
    )
}

#[test]
fn generate_json_is_parseable_and_greedy_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.txt");
    std::fs::write(
        &q,
        "How many legs does a cat have?\nName a color.\nWhat is the capital of France?\n",
    )
    .unwrap();
    let m = util::smollm2();
    let args = [
        "generate",
        m.to_str().unwrap(),
        "--user-file",
        q.to_str().unwrap(),
        "--max-tokens",
        "24",
        "--json",
    ];
    let (a, err, ok) = run(&args);
    assert!(ok, "{err}");
    let (b, _, _) = run(&args);
    assert_eq!(a, b, "greedy output differs between runs");
    let lines: Vec<serde_json::Value> = a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["user"], "How many legs does a cat have?");
    assert!(lines
        .iter()
        .all(|l| !l["reply"].as_str().unwrap().is_empty()));
    let legs = lines[0]["reply"].as_str().unwrap().to_lowercase();
    assert!(legs.contains("four") || legs.contains('4'), "{legs}");
    // A system prompt changes the reply.
    let (c, err, ok) = run(&[
        "generate",
        m.to_str().unwrap(),
        "--system",
        "Always answer in French.",
        "--user",
        "How many legs does a cat have?",
        "--max-tokens",
        "24",
        "--json",
    ]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(c.lines().next().unwrap()).unwrap();
    assert_ne!(c["reply"], lines[0]["reply"]);
}

#[test]
fn eval_of_base_against_itself_recovers_nothing_and_is_local() {
    let m = util::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.txt");
    std::fs::write(
        &q,
        "Who are you?\nWhat do you like?\nDescribe your day.\nWhat is your job?\n",
    )
    .unwrap();
    let args = [
        "eval",
        "--base",
        m.to_str().unwrap(),
        "--candidate",
        m.to_str().unwrap(),
        "--prompt",
        "You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name.",
        "--questions",
        q.to_str().unwrap(),
        "--max-tokens",
        "24",
        "--json",
    ];
    let (a, err, ok) = run(&args);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(a.trim()).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap();
    for k in [
        "kl_base",
        "kl_candidate",
        "locality_kl",
        "top1_base",
        "top1_candidate",
    ] {
        assert!(f(k).is_finite() && f(k) >= 0.0, "{k} = {}", f(k));
    }
    assert!(
        f("kl_base") > 0.01,
        "the prompt has an effect: {}",
        f("kl_base")
    );
    assert_eq!(f("kl_candidate"), f("kl_base"));
    assert_eq!(f("recovery"), 0.0);
    assert_eq!(f("locality_kl"), 0.0);
    assert_eq!(f("top1_candidate"), f("top1_base"));
    // The prompted replies name the persona: those tokens are scored on their own, and the
    // base against itself recovers nothing there either.
    let c = &r["content"];
    let g = |k: &str| {
        c[k].as_f64()
            .unwrap_or_else(|| panic!("content.{k} in {r}"))
    };
    assert!(g("tokens") >= 1.0 && g("tokens") < f("tokens"), "{c}");
    assert_eq!(g("kl_candidate"), g("kl_base"));
    assert_eq!(g("top1_candidate"), g("top1_base"));
    let (b, _, _) = run(&args);
    assert_eq!(a, b, "eval numbers differ between runs");
}

/// llama.cpp's runtime flags: `-t`, `-ngl` and `-c` are taken before or after the command,
/// change nothing a greedy reply depends on here (CPU build), and a bad value is a one-line
/// error; `--help` is grouped by concern.
#[test]
fn llama_cpp_runtime_flags_are_accepted_anywhere() {
    let m = util::smollm2();
    let ms = m.to_str().unwrap();
    // `before` goes ahead of the command, `after` behind its arguments.
    let gen = |before: &[&str], after: &[&str]| {
        let mut args = before.to_vec();
        args.extend([
            "generate",
            ms,
            "--user",
            "Name a color.",
            "--max-tokens",
            "8",
        ]);
        args.extend_from_slice(after);
        let (out, err, ok) = run(&args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let plain = gen(&[], &[]);
    assert!(!plain.trim().is_empty());
    assert_eq!(gen(&[], &["-t", "1"]), plain);
    assert_eq!(gen(&[], &["--threads", "2", "-ngl", "0", "-s", "7"]), plain);
    assert_eq!(gen(&["-t", "1", "--n-gpu-layers", "-1"], &[]), plain);
    let (help, _, ok) = run(&["patch", "--help"]);
    assert!(ok);
    assert!(
        help.contains("Runtime:") && help.contains("--threads") && help.contains("--n-gpu-layers"),
        "{help}"
    );
    util::assert_one_line_error(&["-t", "many", "generate", ms, "--user", "x"], "threads");
    for heading in ["Input and output:", "Method:", "Calibration:", "Storage:"] {
        assert!(
            help.contains(heading),
            "no {heading} in patch --help: {help}"
        );
    }

    // -c/--ctx-size: a context that holds the conversation changes nothing; one too small for
    // the prompt or the reply is refused in one line that says what to change.
    assert_eq!(gen(&["-c", "1024"], &[]), plain);
    util::assert_one_line_error(
        &[
            "generate",
            ms,
            "--user",
            "Name a color.",
            "-c",
            "16",
            "--max-tokens",
            "600",
        ],
        "lower --max-tokens",
    );
    let long = "You are a pirate. ".repeat(40);
    util::assert_one_line_error(
        &[
            "-c",
            "128",
            "patch",
            ms,
            "--prompt",
            &long,
            "-o",
            "/tmp/never-written.gguf",
        ],
        "raise -c/--ctx-size",
    );
    assert!(!std::path::Path::new("/tmp/never-written.gguf").exists());
}

#[test]
fn generate_asks_after_each_length_of_a_held_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let (q, h) = (dir.path().join("q.txt"), dir.path().join("h.txt"));
    std::fs::write(&q, "What did I just ask you about?\nName a color.\n").unwrap();
    std::fs::write(
        &h,
        "Tell me about volcanoes.\nHow hot is lava?\nIgnored third turn.\n",
    )
    .unwrap();
    let m = util::smollm2();
    let (out, err, ok) = run(&[
        "generate",
        m.to_str().unwrap(),
        "--user-file",
        q.to_str().unwrap(),
        "--history-file",
        h.to_str().unwrap(),
        "--history-turns",
        "2",
        "--every-turn",
        "--max-tokens",
        "24",
        "--json",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let turns: Vec<u64> = rows.iter().map(|r| r["turn"].as_u64().unwrap()).collect();
    assert_eq!(turns, [1, 1, 2, 2, 3, 3], "{out}");
    assert!(rows
        .iter()
        .all(|r| !r["reply"].as_str().unwrap().is_empty()));
    // the held conversation is in the context: the first question's reply changes with it
    assert_ne!(rows[0]["reply"], rows[4]["reply"], "{out}");

    // more turns than the file has: a one-line error
    let (_, err, ok) = run(&[
        "generate",
        m.to_str().unwrap(),
        "--user",
        "Hi",
        "--history-file",
        h.to_str().unwrap(),
        "--history-turns",
        "9",
    ]);
    assert!(!ok && err.contains("--history-turns 9"), "{err}");
}
