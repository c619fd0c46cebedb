//! Corrupt and truncated models through the command line: `inspect` and `rewrite` fail with
//! exactly one `error:` line, never a panic, and `rewrite` leaves no output or temporary file.

use std::path::Path;
use std::process::Command;

use gguf::testkit::{corrupt_corpus, model_path, SMOLLM2};

/// Runs the binary; returns (success, stderr).
fn run(args: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gguf-sleep"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_error_line(name: &str, cmd: &str, ok: bool, stderr: &str) {
    assert!(!ok, "{name}: `{cmd}` succeeded");
    assert!(
        !stderr.contains("panicked"),
        "{name}: `{cmd}` panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{name}: `{cmd}` stderr is not one line: {stderr:?}"
    );
    assert!(
        lines[0].starts_with("error: "),
        "{name}: `{cmd}`: {stderr:?}"
    );
}

#[test]
fn corrupt_models_give_one_line_errors_and_no_output() {
    let valid = std::fs::read(model_path(SMOLLM2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let corpus = corrupt_corpus(&valid);
    assert!(corpus.len() >= 60, "{} corrupt files", corpus.len());
    for c in &corpus {
        let input = dir.path().join(format!("{}.gguf", c.name));
        c.write(&valid, &input).unwrap();
        let out = out_dir.join("out.gguf");

        let (ok, stderr) = run(&[Path::new("inspect"), &input]);
        assert_one_error_line(&c.name, "inspect", ok, &stderr);

        let (ok, stderr) = run(&[Path::new("rewrite"), &input, Path::new("-o"), &out]);
        assert_one_error_line(&c.name, "rewrite", ok, &stderr);
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "{}: rewrite left {left:?}", c.name);

        std::fs::remove_file(&input).unwrap();
    }
}

#[test]
fn unwritable_output_is_one_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    std::fs::write(&input, gguf::testkit::synthetic()).unwrap();
    let missing = dir.path().join("missing/dir/out.gguf");
    let (ok, stderr) = run(&[Path::new("rewrite"), &input, Path::new("-o"), &missing]);
    assert_one_error_line("missing dir", "rewrite", ok, &stderr);
    assert!(stderr.contains("cannot create a file in"), "{stderr}");
    let (ok, stderr) = run(&[Path::new("rewrite"), &input, Path::new("-o"), &input]);
    assert_one_error_line("same file", "rewrite", ok, &stderr);
    assert!(
        stderr.contains("refusing to overwrite the input model"),
        "{stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["in.gguf"]);
}
