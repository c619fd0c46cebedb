//! The normal equations of one split, accumulated in f32 a block of rows at a time, and
//! products with their Gram taken in f64 a band of rows at a time.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::engine;

/// Normal equations of one split.
#[derive(Debug, Clone)]
pub(super) struct Normal {
    /// `[x,1]ᵀ[x,1]`, `(d+1)²` (the last row/column only when there is an intercept)
    pub(super) g: Array2<f32>,
    /// `[x,1]ᵀ y`
    pub(super) c: Array2<f32>,
    /// `Σ‖y‖²`
    pub(super) yy: f64,
    /// rows seen
    pub(super) n: usize,
}

impl Normal {
    pub(super) fn new(width: usize, m: usize) -> Normal {
        Normal {
            g: Array2::zeros((width, width)),
            c: Array2::zeros((width, m)),
            yy: 0.0,
            n: 0,
        }
    }

    pub(super) fn add_block(&mut self, x: &Array2<f32>, y: &Array2<f32>) {
        let width = x.ncols();
        // One block's products in f32, summed in f32. Only the Gram's upper block triangle is
        // formed ([`Normal::mirror`] fills in the rest); each band of rows (its tiles right of
        // the diagonal and its rows of `XᵀY`) is one task on rayon's threads, each an OpenBLAS
        // product on one thread: OpenBLAS's own threads would spin between these calls beside
        // llama.cpp's, which run between blocks.
        let band = width.div_ceil(GRAM_BANDS).max(1);
        let bands: Vec<(usize, ArrayViewMut2<f32>, ArrayViewMut2<f32>)> = self
            .g
            .axis_chunks_iter_mut(Axis(0), band)
            .zip(self.c.axis_chunks_iter_mut(Axis(0), band))
            .enumerate()
            .map(|(i, (g, c))| (i * band, g, c))
            .collect();
        engine::with_single_threaded_lapack(|| {
            bands.into_par_iter().for_each(|(r0, mut g, c)| {
                let xi = x.slice(s![.., r0..r0 + g.nrows()]);
                // Shapes agree by construction; every operand is row-major or its transpose.
                let tiles = g.slice_mut(s![.., r0..]);
                engine::blas::gemm_f32(1.0, xi.t(), x.slice(s![.., r0..]), tiles)
                    .and_then(|()| engine::blas::gemm_f32(1.0, xi.t(), y.view(), c))
                    .expect("row-major operands");
            })
        });
        self.yy += y.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        self.n += x.nrows();
    }

    /// Copy the Gram's upper triangle (what [`Normal::add_block`] accumulates) to the lower.
    pub(super) fn mirror(&mut self) {
        let w = self.g.nrows();
        for i in 1..w {
            for j in 0..i {
                self.g[[i, j]] = self.g[[j, i]];
            }
        }
    }

    /// `‖XW − Y‖² − Σ‖y‖²` on these rows for weights `w` against targets whose cross products
    /// with the features are `c` (`C`, or a sketch `C·S` of it).
    pub(super) fn error_less_yy(&self, w: &Array2<f64>, c: &Array2<f64>) -> f64 {
        // ‖XW − Y‖² = tr(WᵀGW) − 2 tr(WᵀC) + Σ‖y‖²
        let gw = gram_dot(&self.g, None, w);
        (w * &gw).sum() - 2.0 * (w * c).sum()
    }

    /// Add another split's sums to these.
    pub(super) fn absorb(&mut self, other: &Normal) {
        self.g += &other.g;
        self.c += &other.c;
        self.yy += other.yy;
        self.n += other.n;
    }
}

/// Rows of a Gram converted to f64 at a time by [`gram_dot`].
const F64_BAND: usize = 256;

/// `(G + diag(extra))·W` in f64, the f32 Gram converted a band of rows at a time (each band one
/// parallel task), so no f64 copy of it is formed.
pub(super) fn gram_dot(g: &Array2<f32>, extra: Option<&[f64]>, w: &Array2<f64>) -> Array2<f64> {
    let n = g.nrows();
    let mut out = Array2::<f64>::zeros((n, w.ncols()));
    let bands: Vec<(usize, ArrayViewMut2<f64>)> = out
        .axis_chunks_iter_mut(Axis(0), F64_BAND)
        .enumerate()
        .map(|(i, o)| (i * F64_BAND, o))
        .collect();
    bands.into_par_iter().for_each(|(r0, mut o)| {
        let rows = r0..r0 + o.nrows();
        let mut tile = g.slice(s![rows.clone(), ..]).mapv(f64::from);
        if let Some(e) = extra {
            for (i, r) in rows.clone().enumerate() {
                tile[[i, r]] += e[r];
            }
        }
        general_mat_mul(1.0, &tile, w, 0.0, &mut o);
    });
    out
}

/// Bands of rows the Gram's upper triangle is accumulated in, in parallel (uneven in work:
/// the first band has the most tiles; more bands than threads keep the threads busy).
const GRAM_BANDS: usize = 8;
