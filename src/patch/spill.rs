//! Captured rows kept on disk instead of in memory.
//!
//! Sequential fitting captures the prompted run once for every layer and then uses one layer's
//! rows per pass. Holding them all would cost `tokens × layers × n_embd × 4` bytes of memory
//! (≈ 350 MiB for SmolLM2 and 64 questions); spilled to one file per (kind, layer) they cost a
//! single layer's rows at a time.

use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::method::Rows;
use crate::capture::{Kind, Matrix};

/// Row-major f32 matrices of many conversations, appended per (kind, layer) to files in a
/// directory, read back one layer at a time.
pub struct Spill {
    dir: PathBuf,
    files: BTreeMap<(Kind, usize), (BufWriter<File>, usize)>,
    /// rows of each pushed conversation
    rows: Vec<usize>,
}

impl Spill {
    /// An empty spill writing into `dir` (which must exist and outlive it).
    pub fn new(dir: &Path) -> Spill {
        Spill {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            rows: Vec::new(),
        }
    }

    fn path(&self, k: Kind, layer: usize) -> PathBuf {
        self.dir.join(format!("{k:?}-{layer}.f32"))
    }

    /// Append one conversation's rows (every matrix must have the same number of rows).
    pub fn push(&mut self, rows: &Rows) -> Result<()> {
        let n = rows.values().next().map_or(0, |m| m.rows);
        for (&(k, l), m) in rows {
            anyhow::ensure!(
                m.rows == n,
                "spill: matrices of one conversation differ in rows"
            );
            if !self.files.contains_key(&(k, l)) {
                anyhow::ensure!(
                    self.rows.is_empty(),
                    "spill: every conversation must hold the same matrices"
                );
                let path = self.path(k, l);
                let f = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                self.files.insert((k, l), (BufWriter::new(f), m.cols));
            }
            let (w, cols) = self.files.get_mut(&(k, l)).expect("inserted above");
            anyhow::ensure!(*cols == m.cols, "spill: column count changed");
            for v in &m.data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        anyhow::ensure!(
            rows.len() == self.files.len(),
            "spill: every conversation must hold the same matrices"
        );
        self.rows.push(n);
        Ok(())
    }

    /// Flush the files: call once after the last `push`.
    pub fn finish(&mut self) -> Result<()> {
        for (w, _) in self.files.values_mut() {
            w.flush().context("cannot write spilled activations")?;
        }
        Ok(())
    }

    /// Every conversation's rows of `layer`, in push order.
    pub fn layer(&self, layer: usize) -> Result<Vec<Rows>> {
        let mut out: Vec<Rows> = vec![Rows::new(); self.rows.len()];
        for (&(k, l), (_, cols)) in &self.files {
            if l != layer {
                continue;
            }
            let path = self.path(k, l);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
            let total: usize = self.rows.iter().sum();
            anyhow::ensure!(
                bytes.len() == total * cols * 4,
                "{} is truncated",
                path.display()
            );
            let mut vals = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            for (conv, &n) in out.iter_mut().zip(&self.rows) {
                let data: Vec<f32> = vals.by_ref().take(n * cols).collect();
                conv.insert(
                    (k, l),
                    Matrix {
                        rows: n,
                        cols: *cols,
                        data,
                    },
                );
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, base: f32) -> Matrix {
        Matrix {
            rows,
            cols,
            data: (0..rows * cols).map(|i| base + i as f32).collect(),
        }
    }

    #[test]
    fn round_trip_per_layer() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::new(dir.path());
        let convs: Vec<Rows> = [(2usize, 0.0f32), (3, 100.0)]
            .iter()
            .map(|&(n, b)| {
                let mut r = Rows::new();
                r.insert((Kind::BlockOut, 0), m(n, 4, b));
                r.insert((Kind::BlockOut, 1), m(n, 4, b + 0.5));
                r
            })
            .collect();
        for c in &convs {
            s.push(c).unwrap();
        }
        s.finish().unwrap();
        let l1 = s.layer(1).unwrap();
        assert_eq!(l1.len(), 2);
        for (got, want) in l1.iter().zip(&convs) {
            assert_eq!(got.len(), 1);
            assert_eq!(got[&(Kind::BlockOut, 1)], want[&(Kind::BlockOut, 1)]);
        }
        assert!(s.layer(7).unwrap().iter().all(|r| r.is_empty()));
    }

    #[test]
    fn mismatched_conversations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::new(dir.path());
        let mut a = Rows::new();
        a.insert((Kind::BlockOut, 0), m(2, 4, 0.0));
        s.push(&a).unwrap();
        let mut b = Rows::new();
        b.insert((Kind::BlockOut, 1), m(2, 4, 0.0));
        assert!(s.push(&b).is_err());
    }
}
