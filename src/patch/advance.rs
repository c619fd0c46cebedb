//! The residual stream past a fitted layer in closed form, where the method allows it.
//!
//! `down` changes only `ffn_down` (and its bias) of the layer it fits. Where the graph adds the
//! MLP's output to the residual stream as it is (every family without a norm after the MLP),
//! the patched block's output is the unpatched one plus `h·Cᵀ + c`: `h` the `ffn_down` inputs
//! the capture already computed, `C = Q(W+Δ) − W` the stored change of the weights and `c` the
//! bias' change. One product of `ffn_down`'s size replaces a second one-layer pass (attention
//! and the whole MLP) per layer. `h` waits on disk ([`Inputs`]) in 8-bit blocks, as llama.cpp
//! itself rounds it for its quantized products, so neither memory nor the result pays for it.

use anyhow::{bail, Context as _, Result};
use gguf::GgmlType;
use ndarray::{Array2, ArrayView2};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::facts::Arch;
use super::method::Method;
use crate::capture::Matrix;
use crate::engine::{self, dequantize, quantize};

/// Whether a layer fitted by `method` on `arch` can be advanced in closed form.
pub fn applies(method: Method, arch: &Arch) -> bool {
    method == Method::Down && arch.ffn_post_norm.is_empty()
}

/// What the stored edits of layer `l` change in its `ffn_down`: `C` (`n_embd × n_ff`, rows
/// as ggml stores them) and the bias' change, if the bias changed. Any other edit of the
/// layer is an error (the closed form would miss it).
pub struct StoredChange {
    c: Array2<f32>,
    bias: Option<Vec<f32>>,
}

impl StoredChange {
    /// Read the change from `edits` against the original tensors of `src`.
    pub fn of(src: &gguf::GgufFile, edits: &gguf::Edits, l: usize) -> Result<StoredChange> {
        let weight = format!("blk.{l}.ffn_down.weight");
        let bias = format!("blk.{l}.ffn_down.bias");
        let layer = format!("blk.{l}.");
        let h = src.header();
        let info = h
            .tensor(&weight)
            .with_context(|| format!("the model has no tensor {weight}"))?;
        if info.dims.len() != 2 {
            bail!("{weight} is not a matrix");
        }
        let (ne0, ne1) = (info.dims[0] as usize, info.dims[1] as usize);
        let mut c = Array2::<f32>::zeros((ne1, ne0));
        let mut db = None;
        for r in edits.replacements() {
            if r.name == weight {
                c = Array2::from_shape_vec((ne1, ne0), replaced_minus_original(src, info, r)?)?;
            } else if r.name == bias {
                let b = h
                    .tensor(&bias)
                    .with_context(|| format!("the model has no tensor {bias}"))?;
                db = Some(replaced_minus_original(src, b, r)?);
            } else if r.name.starts_with(&layer) {
                bail!("closed-form advance: layer {l} also edits {}", r.name);
            }
        }
        for a in edits.additions() {
            if a.name == bias {
                let n = a.dims.iter().product::<u64>();
                db = Some(dequantize(a.ggml_type, &a.data, n)?);
            } else if a.name.starts_with(&layer) {
                bail!("closed-form advance: layer {l} also adds {}", a.name);
            }
        }
        if let Some(b) = &db {
            anyhow::ensure!(
                b.len() == ne1,
                "{bias} has {} values for {ne1} rows of {weight}",
                b.len()
            );
        }
        Ok(StoredChange { c, bias: db })
    }

    /// Add the change's effect on the block output to `out` (`tokens × n_embd`), given the
    /// same tokens' `ffn_down` inputs `h` (`tokens × n_ff`).
    pub fn advance(&self, out: &mut Matrix, h: &Matrix) -> Result<()> {
        let (d, f) = self.c.dim();
        anyhow::ensure!(
            out.cols == d && h.cols == f && out.rows == h.rows,
            "closed-form advance: {}×{} outputs and {}×{} inputs for a {d}×{f} change",
            out.rows,
            out.cols,
            h.rows,
            h.cols
        );
        let hv = ArrayView2::from_shape((h.rows, f), &h.data)?;
        let ov = ndarray::ArrayViewMut2::from_shape((out.rows, d), &mut out.data)?;
        // One product `h · Cᵀ` added in place (OpenBLAS's own threads).
        engine::blas::gemm_f32(1.0, hv, self.c.t(), ov)?;
        if let Some(b) = &self.bias {
            for row in out.data.chunks_exact_mut(d) {
                row.iter_mut().zip(b).for_each(|(o, c)| *o += c);
            }
        }
        Ok(())
    }
}

/// A replaced tensor's stored values less the original's, both dequantized.
fn replaced_minus_original(
    src: &gguf::GgufFile,
    info: &gguf::TensorInfo,
    r: &gguf::Replacement,
) -> Result<Vec<f32>> {
    let mut new = dequantize(r.ggml_type, &r.data, info.n_elements())?;
    let old = dequantize(info.ggml_type, src.tensor_data(info), info.n_elements())?;
    new.iter_mut().zip(&old).for_each(|(n, o)| *n -= o);
    Ok(new)
}

/// A layer's `ffn_down` inputs for every conversation, in capture order, kept on disk until
/// the layer's stored change is known: Q8_0 (8-bit blocks of 32) where the width allows, f32
/// otherwise. The file is removed when the inputs are used or dropped.
pub struct Inputs {
    path: PathBuf,
    out: BufWriter<File>,
    /// each conversation's rows, columns and stored type
    shapes: Vec<(usize, usize, GgmlType)>,
}

impl Inputs {
    /// An empty store writing to `path`.
    pub fn create(path: &Path) -> Result<Inputs> {
        let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Inputs {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            shapes: Vec::new(),
        })
    }

    /// Append one conversation's inputs.
    pub fn push(&mut self, h: &Matrix) -> Result<()> {
        let ty = if h.cols > 0 && h.cols % 32 == 0 {
            GgmlType::Q8_0
        } else {
            GgmlType::F32
        };
        let bytes = quantize(ty, &h.data, h.cols.max(1) as u64, None)?;
        self.out
            .write_all(&bytes)
            .context("cannot write the layer's MLP inputs")?;
        self.shapes.push((h.rows, h.cols, ty));
        Ok(())
    }

    /// Add `change`'s effect to each conversation's stream, in push order; the file is removed.
    pub fn advance(mut self, change: &StoredChange, stream: &mut [Matrix]) -> Result<()> {
        anyhow::ensure!(
            stream.len() == self.shapes.len(),
            "closed-form advance: {} streams for {} conversations' inputs",
            stream.len(),
            self.shapes.len()
        );
        self.out
            .flush()
            .context("cannot write the layer's MLP inputs")?;
        let mut r = BufReader::new(
            File::open(&self.path)
                .with_context(|| format!("cannot read {}", self.path.display()))?,
        );
        let mut bytes = Vec::new();
        for (x, &(rows, cols, ty)) in stream.iter_mut().zip(&self.shapes) {
            let n = (rows * cols) as u64;
            let len = (n / ty.block_size() * ty.type_size()) as usize;
            bytes.resize(len, 0);
            r.read_exact(&mut bytes)
                .with_context(|| format!("{} is truncated", self.path.display()))?;
            let h = Matrix {
                rows,
                cols,
                data: dequantize(ty, &bytes, n)?,
            };
            change.advance(x, &h)?;
        }
        Ok(())
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_adds_the_product_and_the_bias() {
        let s = StoredChange {
            c: Array2::from_shape_vec((2, 3), vec![1., 0., 2., 0., -1., 0.5]).unwrap(),
            bias: Some(vec![0.25, -1.0]),
        };
        let h = Matrix {
            rows: 2,
            cols: 3,
            data: vec![1., 2., 3., -1., 0., 4.],
        };
        let mut out = Matrix {
            rows: 2,
            cols: 2,
            data: vec![10., 20., 30., 40.],
        };
        s.advance(&mut out, &h).unwrap();
        // row 0: [1+6, -2+1.5] = [7, -0.5]; row 1: [-1+8, 0+2] = [7, 2]
        assert_eq!(out.data, vec![17.25, 18.5, 37.25, 41.0]);
        let wrong = Matrix {
            rows: 2,
            cols: 4,
            data: vec![0.; 8],
        };
        assert!(s.advance(&mut out, &wrong).is_err());
    }

    #[test]
    fn inputs_on_disk_come_back_in_order_to_8_bit_precision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let mut seed = 3u64;
        let conv = |rows: usize, cols: usize, seed: &mut u64| Matrix {
            rows,
            cols,
            data: (0..rows * cols)
                .map(|_| crate::testing::lcg(seed))
                .collect(),
        };
        // Two Q8_0-wide conversations and one of a width Q8_0 cannot hold (kept in f32).
        let hs = [conv(3, 64, &mut seed), conv(2, 64, &mut seed)];
        let c: Vec<f32> = (0..2 * 64)
            .map(|_| crate::testing::lcg(&mut seed))
            .collect();
        let change = StoredChange {
            c: Array2::from_shape_vec((2, 64), c).unwrap(),
            bias: None,
        };
        let mut inputs = Inputs::create(&path).unwrap();
        for h in &hs {
            inputs.push(h).unwrap();
        }
        let mut got: Vec<Matrix> = hs
            .iter()
            .map(|h| Matrix {
                rows: h.rows,
                cols: 2,
                data: vec![0.0; h.rows * 2],
            })
            .collect();
        let mut want = got.clone();
        inputs.advance(&change, &mut got).unwrap();
        assert!(!path.exists(), "the inputs' file is removed once used");
        for (w, h) in want.iter_mut().zip(&hs) {
            change.advance(w, h).unwrap();
        }
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.data.iter().zip(&w.data) {
                // 8-bit blocks of inputs within ±0.5: each input off by at most 0.5/254.
                assert!(
                    (a - b).abs() < 64.0 * 0.5 * 0.5 / 254.0 + 1e-6,
                    "{a} vs {b}"
                );
            }
            assert_ne!(g.data, vec![0.0; g.data.len()]);
        }
        let odd = conv(2, 5, &mut seed);
        let narrow = StoredChange {
            c: Array2::from_shape_vec((1, 5), vec![1., 2., 3., 4., 5.]).unwrap(),
            bias: None,
        };
        let mut inputs = Inputs::create(&path).unwrap();
        inputs.push(&odd).unwrap();
        let mut got = vec![Matrix {
            rows: 2,
            cols: 1,
            data: vec![0.0; 2],
        }];
        let mut want = got.clone();
        inputs.advance(&narrow, &mut got).unwrap();
        narrow.advance(&mut want[0], &odd).unwrap();
        assert_eq!(
            got[0].data, want[0].data,
            "a width Q8_0 cannot hold is kept exactly"
        );
    }
}
