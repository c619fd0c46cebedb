//! Captured rows kept on disk instead of in memory.
//!
//! Sequential fitting captures the prompted run once for every layer and then uses one layer's
//! rows per pass. Holding them all would cost `tokens × layers × n_embd × 4` bytes of memory
//! (≈ 350 MiB for SmolLM2 and 64 questions); spilled to one file per (kind, layer) they cost a
//! single layer's rows at a time.
//!
//! On disk each row is f16 (half the bytes of f32: the spill is the patch's largest scratch
//! file) after an exact power-of-two scale, kept per row, that brings the row's largest entry
//! within f16's range: residual streams with entries beyond 65 504 (Gemma's, for one) keep
//! f16's relative precision (2⁻¹¹) instead of overflowing. A fit's targets carry far larger
//! errors than that (see docs/RESULTS.md, "A whole Llama-3.2-1B-sized file").

use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use half::f16;

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
        self.dir.join(format!("{k:?}-{layer}.f16"))
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
            let mut bytes = Vec::with_capacity(m.data.len() * 2 + m.rows * 4);
            for row in m.data.chunks_exact(m.cols.max(1)) {
                encode_row(row, &mut bytes);
            }
            w.write_all(&bytes)
                .context("cannot write spilled activations")?;
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

    /// Every conversation's rows of `layer`, in push order; their files are removed (a
    /// sequential fit reads each layer once, so the spill shrinks as the fit goes on).
    pub fn take_layer(&mut self, layer: usize) -> Result<Vec<Rows>> {
        let out = self.layer(layer)?;
        let keys: Vec<(Kind, usize)> = self
            .files
            .keys()
            .filter(|k| k.1 == layer)
            .copied()
            .collect();
        for k in keys {
            self.files.remove(&k);
            let path = self.path(k.0, k.1);
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(out)
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
            let row_bytes = row_bytes(*cols);
            anyhow::ensure!(
                bytes.len() == total * row_bytes,
                "{} is truncated",
                path.display()
            );
            let mut rows = bytes.chunks_exact(row_bytes);
            for (conv, &n) in out.iter_mut().zip(&self.rows) {
                let mut data = Vec::with_capacity(n * cols);
                for r in rows.by_ref().take(n) {
                    decode_row(r, &mut data);
                }
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

/// Entries of a row are scaled below this before the f16 conversion (half of f16's largest
/// finite value, so rounding cannot carry one over).
const F16_LIMIT: f32 = 32768.0;

/// Bytes one spilled row of `cols` entries takes: its scale, then its entries.
fn row_bytes(cols: usize) -> usize {
    4 + 2 * cols
}

/// Append `row` as its power-of-two scale `s` (f32) and the f16 entries of `row / s`.
fn encode_row(row: &[f32], out: &mut Vec<u8>) {
    let top = row
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut scale = 1f32;
    while top / scale >= F16_LIMIT {
        scale *= 2.0;
    }
    out.extend_from_slice(&scale.to_le_bytes());
    for &v in row {
        out.extend_from_slice(&f16::from_f32(v / scale).to_le_bytes());
    }
}

/// Append the entries of one row written by [`encode_row`].
fn decode_row(bytes: &[u8], out: &mut Vec<f32>) {
    let scale = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    out.extend(
        bytes[4..]
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32() * scale),
    );
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
        // Taken, a layer's files are gone; the other layer's stay.
        assert_eq!(s.take_layer(1).unwrap(), l1);
        assert!(!dir.path().join("BlockOut-1.f16").exists());
        assert!(s.take_layer(1).unwrap().iter().all(|r| r.is_empty()));
        assert_eq!(
            s.layer(0).unwrap()[1][&(Kind::BlockOut, 0)],
            convs[1][&(Kind::BlockOut, 0)]
        );
    }

    #[test]
    fn rows_keep_f16_relative_precision_beyond_f16_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::new(dir.path());
        // One row within f16's range, one with an entry f16 cannot hold, one of tiny values.
        let data = vec![
            1.2345f32, -0.001, 3.0e4, 7.77, //
            1.0e6, -2.5, 0.125, 9.0e5, //
            1.0e-3, -2.0e-3, 3.3e-3, 0.0,
        ];
        let mut r = Rows::new();
        r.insert(
            (Kind::BlockOut, 3),
            Matrix {
                rows: 3,
                cols: 4,
                data: data.clone(),
            },
        );
        s.push(&r).unwrap();
        s.finish().unwrap();
        let got = &s.layer(3).unwrap()[0][&(Kind::BlockOut, 3)];
        assert_eq!((got.rows, got.cols), (3, 4));
        for (g, w) in got.data.iter().zip(&data) {
            assert!(g.is_finite(), "{w} came back as {g}");
            // f16 keeps 11 significant bits: a relative error of at most 2⁻¹¹.
            assert!((g - w).abs() <= w.abs() / 2048.0, "{w} came back as {g}");
        }
        assert_ne!(got.data[1], data[1], "values are stored in f16, not f32");
        // 3 rows × (4 bytes of scale + 4 × 2 bytes): half of f32's 48 bytes, plus the scales.
        let file = dir.path().join("BlockOut-3.f16");
        assert_eq!(std::fs::metadata(file).unwrap().len(), 36);
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
