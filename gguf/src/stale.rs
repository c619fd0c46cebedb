//! Temporary files left behind by a process that was killed (SIGKILL, power loss) before it
//! could remove them.
//!
//! Temporary names carry the writer's process id right after a fixed prefix
//! (`PREFIX{pid}-...`); an entry whose process no longer runs is stale and may be removed. Where
//! liveness cannot be told (no `/proc`), nothing is removed: stale files are then only ignored.

use std::fs;
use std::path::Path;

/// Removes the entries of `dir` named `{prefix}{pid}-…` whose process `pid` is gone (files and
/// directories). Returns how many were removed; errors are ignored (best effort).
pub fn remove_stale(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || !is_gone(pid) {
            continue;
        }
        let path = e.path();
        let ok = match e.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path).is_ok(),
            Ok(_) => fs::remove_file(&path).is_ok(),
            Err(_) => false,
        };
        removed += usize::from(ok);
    }
    removed
}

/// Whether process `pid` has certainly exited (Linux: no `/proc/{pid}`).
fn is_gone(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_entries_of_dead_processes() {
        if !Path::new("/proc/self").exists() {
            eprintln!("skipped: no /proc, liveness cannot be told");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = dir.path().join(".m.gguf.tmp-4194999-00ff");
        let dead_dir = dir.path().join(".m.gguf.tmp-4194998-aa");
        let alive = dir
            .path()
            .join(format!(".m.gguf.tmp-{}-01", std::process::id()));
        let other = dir.path().join("m.gguf");
        let odd = dir.path().join(".m.gguf.tmp-notapid");
        for p in [&dead, &alive, &other, &odd] {
            fs::write(p, b"x").unwrap();
        }
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("inner"), b"x").unwrap();
        assert_eq!(remove_stale(dir.path(), ".m.gguf.tmp-"), 2);
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(alive.exists() && other.exists() && odd.exists());
    }
}
