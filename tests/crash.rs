//! Crash safety: a writer killed with SIGKILL at any point never leaves a partial file under the
//! output name nor touches the input, and the next run succeeds and removes what the killed one
//! left behind. A full filesystem and a read-only directory are one-line errors with no output.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn sha256(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

fn spawn(args: &[&str]) -> Child {
    Command::new(util::bin())
        .args(args)
        .env("GGUF_SLEEP_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill(mut c: Child) {
    // Child::kill sends SIGKILL on Unix.
    let _ = c.kill();
    c.wait().unwrap();
}

/// Names in `dir` other than `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

/// Waits until an entry of `dir` starts with `prefix` (or `child` exits); true if one appeared.
fn wait_for(dir: &Path, prefix: &str, child: &mut Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if leftovers(dir, &[]).iter().any(|n| n.starts_with(prefix)) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Runs `args` to the end (one thread); asserts it succeeded.
fn run_ok(args: &[&str]) {
    let st = Command::new(util::bin())
        .args(args)
        .env("GGUF_SLEEP_THREADS", "1")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// Spawns `args` and kills it as soon as an entry of `dir` starts with `prefix`.
fn kill_when(dir: &Path, args: &[&str], prefix: &str) {
    let mut c = spawn(args);
    assert!(
        wait_for(dir, prefix, &mut c, Duration::from_secs(300)),
        "{} ended before {prefix}* appeared",
        args[0]
    );
    std::thread::sleep(Duration::from_millis(300));
    kill(c);
}

#[test]
fn rewrite_killed_at_any_point_leaves_no_partial_output() {
    let input = util::gemma3();
    let before = sha256(&input);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let out_s = out.to_str().unwrap();
    let mut killed_while_writing = 0;
    for delay_ms in [0u64, 10, 30, 60, 100, 150, 250, 400] {
        let _ = std::fs::remove_file(&out);
        let mut c = spawn(&["rewrite", input.to_str().unwrap(), "-o", out_s]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if c.try_wait().unwrap().is_none() {
            killed_while_writing += usize::from(
                leftovers(dir.path(), &[])
                    .iter()
                    .any(|n| n.contains(".tmp-")),
            );
        }
        kill(c);
        // The output name holds nothing or the whole file (a rewrite is byte-identical).
        if out.exists() {
            assert_eq!(sha256(&out), before, "partial output after {delay_ms} ms");
        }
    }
    // And once as soon as the temporary file appears (a fast disk can beat the fixed delays).
    let _ = std::fs::remove_file(&out);
    let mut c = spawn(&["rewrite", input.to_str().unwrap(), "-o", out_s]);
    let caught = wait_for(
        dir.path(),
        ".out.gguf.tmp-",
        &mut c,
        Duration::from_secs(60),
    );
    kill(c);
    killed_while_writing += usize::from(caught);
    if out.exists() {
        assert_eq!(
            sha256(&out),
            before,
            "partial output after a kill while writing"
        );
    }
    assert!(
        killed_while_writing > 0,
        "no kill landed while the temporary file existed"
    );
    assert_eq!(sha256(&input), before, "the input changed");
    let st = Command::new(util::bin())
        .args(["rewrite", input.to_str().unwrap(), "-o", out_s])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(sha256(&out), before);
    assert_eq!(leftovers(dir.path(), &["out.gguf"]), Vec::<String>::new());
}

#[test]
fn patch_killed_while_fitting_or_writing_recovers_on_the_next_run() {
    let input = util::smollm2();
    let before = sha256(&input);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.gguf");
    let args = [
        "patch",
        input.to_str().unwrap(),
        "--prompt",
        "You are Captain Byte, a pirate robot.",
        "-o",
        out.to_str().unwrap(),
        "--layers",
        "0..3",
        "--calib-size",
        "6",
        "--max-tokens",
        "8",
    ];
    // While fitting: the sequential working directory exists.
    kill_when(dir.path(), &args, ".gguf-sleep-seq-");
    assert!(!out.exists(), "output exists after a kill while fitting");
    assert!(
        !leftovers(dir.path(), &[]).is_empty(),
        "nothing left behind to clean"
    );

    // While writing the output: its temporary file exists. A run can finish between two polls;
    // then the output must be whole.
    let mut c = spawn(&args);
    let caught = wait_for(dir.path(), ".p.gguf.tmp-", &mut c, Duration::from_secs(300));
    kill(c);
    if caught {
        assert!(!out.exists(), "output exists after a kill while writing");
    } else {
        eprintln!("the write finished before the kill; checking the output is whole");
        gguf::GgufFile::open(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
    assert_eq!(sha256(&input), before, "the input changed");

    // The next run succeeds and removes the killed runs' leftovers.
    run_ok(&args);
    gguf::GgufFile::open(&out).unwrap();
    assert_eq!(leftovers(dir.path(), &["p.gguf"]), Vec::<String>::new());
}

/// A bake killed while its warm-start patch works leaves scratch files beside its output (the
/// patched model's file and the patch's working directory); the next bake in that directory
/// removes them and leaves only its output.
#[test]
fn bake_killed_with_scratch_files_is_cleaned_up_by_the_next_bake() {
    let input = util::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.gguf");
    let args = [
        "bake",
        input.to_str().unwrap(),
        "--prompt",
        "You are Captain Byte, a pirate robot.",
        "-o",
        out.to_str().unwrap(),
        "--calib-size",
        "10",
        "--init-calib-size",
        "4",
        "--steps",
        "1",
        "--max-tokens",
        "8",
    ];
    kill_when(dir.path(), &args, ".gguf-sleep-seq-");
    let left = leftovers(dir.path(), &[]);
    assert!(!out.exists(), "output exists after a kill");
    for prefix in [".gguf-sleep-patch-", ".gguf-sleep-seq-"] {
        assert!(
            left.iter().any(|n| n.starts_with(prefix)),
            "no {prefix}* left behind to clean: {left:?}"
        );
    }

    run_ok(&args);
    gguf::GgufFile::open(&out).unwrap();
    assert_eq!(leftovers(dir.path(), &["b.gguf"]), Vec::<String>::new());
}

/// Mounts a tmpfs at `dir` with `opts`; false (after saying why) where mounting is not allowed.
fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
    }
    ok
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn one_line_error(args: &[&str]) -> String {
    let out = Command::new(util::bin()).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// `rewrite` SmolLM2 into a tmpfs mounted with `opts`, then `then(out)`: the rewrite's
/// one-line error and what is left in the directory (`None` where mounting is not allowed).
fn rewrite_into_tmpfs(opts: &str, then: impl FnOnce(&Path)) -> Option<(String, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), opts) {
        return None;
    }
    let _m = Mount(dir.path().to_path_buf());
    let out = dir.path().join("out.gguf");
    let input = util::smollm2();
    let err = one_line_error(&[
        "rewrite",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    then(&out);
    Some((err, leftovers(dir.path(), &[])))
}

#[test]
fn a_full_filesystem_is_a_one_line_error_with_no_output() {
    let Some((err, left)) = rewrite_into_tmpfs("size=16m", |_| {}) else {
        return;
    };
    assert!(err.to_lowercase().contains("space"), "{err}");
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn a_read_only_directory_is_a_one_line_error() {
    let r = rewrite_into_tmpfs("size=1m,ro", |out| {
        let input = util::smollm2();
        let err = one_line_error(&[
            "patch",
            input.to_str().unwrap(),
            "--prompt",
            "Be brief.",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(err.contains("cannot write to"), "{err}");
        assert!(!out.exists());
    });
    let Some((err, left)) = r else {
        return;
    };
    assert!(err.contains("Read-only"), "{err}");
    assert_eq!(left, Vec::<String>::new());
}
