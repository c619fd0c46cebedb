//! Where outputs go: guards on the output path, and scratch files and directories beside it.
//!
//! Every scratch entry is named `.gguf-sleep-{what}-{pid}-…` in the output's directory, so a
//! run killed before it could remove its own leaves nothing that the next run in that directory
//! does not remove ([`remove_stale_scratch`]).

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// Whether two paths name the same file (the second may not exist yet).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        Some(parent_dir(p).canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// The directory a path is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fails early, before minutes of work, when the output's directory takes no new files.
pub fn check_writable(output: &Path) -> Result<()> {
    let dir = parent_dir(output);
    tempfile::Builder::new()
        .prefix(".gguf-sleep-probe-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| {
            format!(
                "cannot write to {}: choose an `output` in a writable directory",
                dir.display()
            )
        })
}

/// The kinds of scratch entry a run makes beside its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scratch {
    /// the sequential fit's working directory
    Seq,
    /// the merged, unquantized patch an export is made from
    Merged,
    /// bake's warm-start patch
    Patch,
    /// bake's adapter, the teacher of a refit
    Adapter,
}

impl Scratch {
    /// Every kind.
    pub const ALL: [Scratch; 4] = [
        Scratch::Seq,
        Scratch::Merged,
        Scratch::Patch,
        Scratch::Adapter,
    ];

    /// The name prefix of entries of this kind: `.gguf-sleep-{kind}-`.
    pub fn prefix(self) -> &'static str {
        match self {
            Scratch::Seq => ".gguf-sleep-seq-",
            Scratch::Merged => ".gguf-sleep-merged-",
            Scratch::Patch => ".gguf-sleep-patch-",
            Scratch::Adapter => ".gguf-sleep-adapter-",
        }
    }
}

/// Remove what runs that are gone (killed before they could clean up) left in `dir`, of every
/// [`Scratch`] kind; returns how many entries were removed. Every run that writes calls it
/// before it makes scratch entries of its own.
pub fn remove_stale_scratch(dir: &Path) -> usize {
    Scratch::ALL
        .iter()
        .map(|k| gguf::remove_stale(dir, k.prefix()))
        .sum()
}

/// A scratch `.gguf` beside `output` (`.gguf-sleep-{kind}-{pid}-…`), removed when dropped.
pub fn scratch_file(output: &Path, kind: Scratch) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(output);
    tempfile::Builder::new()
        .prefix(&format!("{}{}-", kind.prefix(), std::process::id()))
        .suffix(".gguf")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))
}

/// A scratch directory in `dir` (`.gguf-sleep-{kind}-{pid}-…`), removed when dropped.
pub fn scratch_dir(dir: &Path, kind: Scratch) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{}{}-", kind.prefix(), std::process::id()))
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a working directory in {}", dir.display()))
}

/// Write options for a working file that is not kept: no fsyncs.
pub fn scratch_options() -> gguf::WriteOptions {
    gguf::WriteOptions {
        scratch: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_in_the_current_directory_and_the_same_file_is_found() {
        assert_eq!(parent_dir(Path::new("x.gguf")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/x.gguf")), Path::new("a"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, b"x").unwrap();
        assert!(same_file(&f, &dir.path().join(".").join("m.gguf")));
        assert!(!same_file(&f, &dir.path().join("other.gguf")));
    }

    #[test]
    fn scratch_entries_carry_the_prefix_and_the_process_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = scratch_file(&dir.path().join("out.gguf"), Scratch::Patch).unwrap();
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        let want = format!(".gguf-sleep-patch-{}-", std::process::id());
        assert!(name.starts_with(&want), "{name}");
        let d = scratch_dir(dir.path(), Scratch::Seq).unwrap();
        let name = d.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!(".gguf-sleep-seq-{}-", std::process::id())),
            "{name}"
        );
    }
}
