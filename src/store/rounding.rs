//! Output-aware rounding of an edited matrix: which way each weight is rounded is chosen so that
//! the layer's output on the calibration inputs, not each weight alone, stays closest to the
//! edit's.
//!
//! A fitted edit is mostly smaller than half a quantization step, so rounding every weight of
//! `W + Δ` to its nearest grid value gives most of `W` back and loses the edit. The error that
//! matters is the output's, `‖(Q − W − Δ)·X‖² = Σ_rows e·H·eᵀ` with `H = Σ x xᵀ` the Gram of the
//! matrix's inputs over the calibration tokens, and it splits by row. Each row starts from
//! ggml's nearest rounding and is improved by greedy coordinate descent: a weight moves one grid
//! step up or down while that lowers `e·H·eᵀ` (the gradient `H·eᵀ` is kept up to date, so a sweep
//! costs one pass over the row plus one row of `H` per move). `H` is dampened (a multiple of its
//! mean diagonal added, which charges every move its weight-space size too): with little damping
//! the search also fits the calibration inputs' accidents, which shows on other text. The
//! damping is chosen per matrix on the validation rows: each candidate searched on the training
//! rows' Gram, scored on the validation rows' (nearest rounding is a candidate too), the winner
//! searched again on all rows. A wide matrix's damping is chosen on a sample of its rows.
//! (Error feedback as in GPTQ, Frantar et al. 2023, was tried first: for an edit this small its
//! dithering adds more error than it removes; docs/RESULTS.md.)
//!
//! The grid of each block is the one ggml's reference quantizer chose for `W + Δ`; the weights
//! that fix that grid (the block's extremes) stay put, so quantizing the chosen values again
//! with ggml's codec gives the same grid and exactly the chosen codes. For the types with one
//! scale per 32 weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the grid follows from the extremes. The
//! k-quants (Q4_K, Q5_K: a scale and a minimum per 32 weights; Q6_K: a scale per 16) choose
//! each sub-block's grid by a search, so it is read off the dequantized values instead: the
//! smallest gap between them is the step, and a sub-block whose values are not all on one such
//! grid is left as rounded; moves stay between the sub-block's extremes. Any block the codec
//! does not store as chosen is stored as ggml's nearest rounding, so the stored bytes never
//! hold an unsearched mix. Other types are rounded to nearest. When the matrix's output has a
//! bias (an always-1 input, stored exactly), the bias takes up the mean of the error.

use anyhow::{bail, Result};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use gguf::GgmlType;

use crate::engine::{dequantize, quantize};

/// Second-order statistics of one matrix's inputs, for [`round`].
#[derive(Debug, Clone)]
pub struct Hessian {
    /// `Σ x xᵀ` over the calibration tokens, `ne0 × ne0`, or one wider with an always-1 input
    /// last when the matrix's output has a bias the error may flow into
    pub gram: Array2<f32>,
    /// the part of `gram` from the validation rows: the damping is chosen on it
    pub val: Option<Array2<f32>>,
    /// the bias (tensor, the tensor a created bias follows) that takes the error's mean
    pub bias: Option<(String, String)>,
    /// choose the roundings; else round to nearest and only measure the output error
    pub search: bool,
}

/// A matrix rounded with [`round`].
pub struct Rounded {
    /// the stored bytes (`rows` rows of `ne0`, the type's row layout)
    pub data: Vec<u8>,
    /// what the stored bytes dequantize to, `rows × ne0`
    pub stored: Vec<f32>,
    /// what to add to the bias (one value per row), when the Hessian names one
    pub bias: Option<Vec<f32>>,
    /// weights rounded away from their nearest grid value
    pub moved: usize,
    /// weights the codec did not store as chosen (0 unless a block's grid could not be kept);
    /// their blocks are stored as ggml's nearest rounding
    pub mismatched: usize,
    /// the damping used, relative to the mean of `H`'s diagonal; `None`: nearest rounding did
    /// best on the validation rows and was kept
    pub damp: Option<f64>,
}

/// How a block type lays out its grid (ggml's reference quantizer).
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// weights that share one step (a block, or a k-quant's sub-block)
    sub: usize,
    /// the step is read off each sub-block's values (k-quants) rather than its extremes
    inferred: bool,
    /// codes `0..levels`
    levels: i32,
    /// value = `m + code·d` (the block's minimum at code 0) instead of `(code − offset)·d`
    with_min: bool,
    /// the code of zero (symmetric types)
    offset: i32,
    /// the block's largest magnitude sits at code 0 (`d = −extreme/offset`), else at ±(levels−1−offset)
    extreme_low: bool,
}

fn grid(ty: GgmlType) -> Option<Grid> {
    let g = |levels, with_min, offset, extreme_low| {
        Some(Grid {
            sub: 32,
            inferred: false,
            levels,
            with_min,
            offset,
            extreme_low,
        })
    };
    let inferred = |sub, levels| {
        Some(Grid {
            sub,
            inferred: true,
            levels,
            with_min: true,
            offset: 0,
            extreme_low: false,
        })
    };
    match ty {
        GgmlType::Q4_0 => g(16, false, 8, true),
        GgmlType::Q4_1 => g(16, true, 0, false),
        GgmlType::Q5_0 => g(32, false, 16, true),
        GgmlType::Q5_1 => g(32, true, 0, false),
        GgmlType::Q8_0 => g(255, false, 127, false),
        GgmlType::Q4_K => inferred(32, 16),
        GgmlType::Q5_K => inferred(32, 32),
        GgmlType::Q6_K => inferred(16, 64),
        _ => None,
    }
}

/// Whether [`round`] chooses roundings for `ty` (else it rounds to nearest).
pub fn supports(ty: GgmlType) -> bool {
    grid(ty).is_some()
}

/// Dampings tried (added to `H`'s diagonal, relative to its mean): the larger, the fewer
/// weights move for small gains on the calibration inputs, which may not carry over to other
/// text. The one with the least error on the validation rows is used.
pub const DAMPS: [f64; 3] = [0.01, 0.1, 1.0];

/// The damping without validation rows.
const DEFAULT_DAMP: f64 = 0.1;

/// Most passes over a row.
const SWEEPS: usize = 16;

/// Quantize `target` (`rows × ne0`, row-major) to `ty`, choosing roundings that keep the output
/// error over the inputs' Gram small (see the module docs).
pub fn round(ty: GgmlType, target: &[f32], ne0: usize, hessian: &Hessian) -> Result<Rounded> {
    let Some(grid) = grid(ty) else {
        bail!("internal: no output-aware rounding for {}", ty.name());
    };
    let bs = ty.block_size() as usize;
    if ne0 % bs != 0 || target.len() % ne0 != 0 {
        bail!("internal: a {} matrix of width {ne0}", ty.name());
    }
    let width = hessian.gram.nrows();
    let square = |g: &Array2<f32>| g.nrows() == width && g.ncols() == width;
    if width != ne0 + hessian.bias.is_some() as usize
        || !square(&hessian.gram)
        || !hessian.val.as_ref().is_none_or(square)
    {
        bail!("internal: Hessian of width {width} for a matrix of width {ne0}");
    }
    let nearest = quantize(ty, target, ne0 as u64, None)?;
    let first = dequantize(ty, &nearest, target.len() as u64)?;
    let problem = Problem {
        grid,
        ne0,
        target,
        first: &first,
    };
    let damp = match &hessian.val {
        Some(val) if val.diag().iter().any(|&v| v > 0.0) => {
            let sample = problem.row_sample();
            let on = sample.as_ref().map_or(problem, |(target, first)| Problem {
                target,
                first,
                ..problem
            });
            on.choose_damp(&hessian.gram, val)
        }
        _ => Some(DEFAULT_DAMP),
    };
    let (chosen, moved) = match damp {
        Some(d) => problem.search(Gram::all(&hessian.gram), d),
        None => (first.clone(), 0),
    };
    let mut data = quantize(ty, &chosen, ne0 as u64, None)?;
    let mut stored = dequantize(ty, &data, target.len() as u64)?;
    let mismatched = revert_mismatched(ty, &chosen, (&nearest, &first), &mut data, &mut stored);
    let bias = hessian
        .bias
        .as_ref()
        .map(|_| best_bias(&problem.error(&stored), Gram::all(&hessian.gram)));
    Ok(Rounded {
        data,
        stored,
        bias,
        moved,
        mismatched,
        damp,
    })
}

/// Blocks whose stored values differ from the chosen ones get ggml's nearest rounding back, its
/// bytes and what they dequantize to (`nearest`), in `data` and `stored`; returns how many
/// chosen weights the codec did not store.
fn revert_mismatched(
    ty: GgmlType,
    chosen: &[f32],
    nearest: (&[u8], &[f32]),
    data: &mut [u8],
    stored: &mut [f32],
) -> usize {
    let (bs, bytes) = (ty.block_size() as usize, ty.type_size() as usize);
    let mut mismatched = 0;
    for (b, (c, st)) in chosen.chunks(bs).zip(stored.chunks_mut(bs)).enumerate() {
        let span = c.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-30);
        let off = c
            .iter()
            .zip(st.iter())
            .filter(|(a, b)| (*a - *b).abs() > 1e-3 * span)
            .count();
        if off > 0 {
            mismatched += off;
            let (raw, vals) = (b * bytes..(b + 1) * bytes, b * bs..(b + 1) * bs);
            data[raw.clone()].copy_from_slice(&nearest.0[raw]);
            st.copy_from_slice(&nearest.1[vals]);
        }
    }
    mismatched
}

/// Rows the damping is chosen on at most (evenly spaced): a scalar per matrix, which a sample
/// of rows estimates, while each candidate's search and score over every row of a wide matrix
/// cost as much as the final search (at d_ffn 8192, 2048 rows: four products of 275 GFLOP).
const DAMP_ROWS: usize = 256;

/// One matrix to round.
#[derive(Clone, Copy)]
struct Problem<'a> {
    grid: Grid,
    ne0: usize,
    target: &'a [f32],
    /// ggml's nearest rounding of `target`, dequantized
    first: &'a [f32],
}

impl Problem<'_> {
    /// The target's and ggml's rounding's rows the damping is chosen on, where there are more
    /// than [`DAMP_ROWS`] (`None`: all of them).
    fn row_sample(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let (ne0, rows) = (self.ne0, self.target.len() / self.ne0);
        if rows <= DAMP_ROWS {
            return None;
        }
        let take = |v: &[f32]| -> Vec<f32> {
            (0..DAMP_ROWS)
                .flat_map(|i| {
                    let r = i * rows / DAMP_ROWS;
                    v[r * ne0..(r + 1) * ne0].iter().copied()
                })
                .collect()
        };
        Some((take(self.target), take(self.first)))
    }

    /// `values − target`, `rows × ne0`.
    fn error(&self, values: &[f32]) -> Array2<f32> {
        let ne0 = self.ne0;
        Array2::from_shape_fn((values.len() / ne0, ne0), |(r, j)| {
            values[r * ne0 + j] - self.target[r * ne0 + j]
        })
    }

    /// Every row searched from ggml's rounding, against `gram` dampened by `damp`.
    fn search(&self, gram: Gram, damp: f64) -> (Vec<f32>, usize) {
        let h = reduced(gram, self.ne0, damp);
        // The gradient of every row's error, H·eᵀ, in one product.
        let g0 = par_dot(self.error(self.first).view(), h.view());
        let g0 = g0.as_slice().expect("standard layout");
        let group = GROUP * self.ne0;
        let results: Vec<(Vec<f32>, usize)> = self
            .first
            .par_chunks(group)
            .zip(g0.par_chunks(group))
            .flat_map_iter(|(q, g)| search_rows(self.grid, q, g, &h))
            .collect();
        let moved = results.iter().map(|r| r.1).sum();
        (results.into_iter().flat_map(|r| r.0).collect(), moved)
    }

    /// The damping whose rounding, searched on the training rows (`all − val`), leaves the least
    /// output error on the validation rows (`None`: nearest rounding does better than any).
    fn choose_damp(&self, all: &Array2<f32>, val: &Array2<f32>) -> Option<f64> {
        let train = Gram {
            all,
            less: Some(val),
        };
        let val_error = |values: &[f32]| {
            let mut e = self.error(values);
            if all.nrows() > self.ne0 {
                let b = best_bias(&e, train);
                e.push_column(ndarray::ArrayView1::from(&b))
                    .expect("rows match");
            }
            sum_product(par_dot(e.view(), val.view()).view(), e.view())
        };
        let mut best = (val_error(self.first), None);
        for d in DAMPS {
            let err = val_error(&self.search(train, d).0);
            if err < best.0 {
                best = (err, Some(d));
            }
        }
        best.1
    }
}

/// A Gram, or the difference of two (the training rows' as every row's less the validation
/// rows'), read entry by entry so that the difference is never stored.
#[derive(Clone, Copy)]
struct Gram<'a> {
    all: &'a Array2<f32>,
    less: Option<&'a Array2<f32>>,
}

impl<'a> Gram<'a> {
    fn all(all: &'a Array2<f32>) -> Gram<'a> {
        Gram { all, less: None }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        let g = self.all[[i, j]] as f64;
        self.less.map_or(g, |v| g - v[[i, j]] as f64)
    }
}

/// `a·b`, the rows of `a` shared out over the threads, written in place (no parts to join).
fn par_dot(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f32> {
    const CHUNK: usize = 32;
    let mut out = Array2::<f32>::zeros((a.nrows(), b.ncols()));
    let parts: Vec<(usize, ArrayViewMut2<f32>)> = out
        .axis_chunks_iter_mut(Axis(0), CHUNK)
        .enumerate()
        .map(|(i, o)| (i * CHUNK, o))
        .collect();
    parts.into_par_iter().for_each(|(r0, mut o)| {
        let rows = a.slice(s![r0..r0 + o.nrows(), ..]);
        general_mat_mul(1.0, &rows, &b, 0.0, &mut o);
    });
    out
}

/// The bias that best absorbs the error `e` (`rows × ne0`) over `gram` (one wider, the
/// always-1 input last): `−Σ_tokens (e·x) / N` per row.
fn best_bias(e: &Array2<f32>, gram: Gram) -> Vec<f32> {
    let ne0 = e.ncols();
    let n = gram.at(ne0, ne0).max(1e-30) as f32;
    let col = ndarray::Array1::from_shape_fn(ne0, |j| gram.at(ne0, j) as f32);
    e.dot(&col).iter().map(|v| -v / n).collect()
}

/// `Σ a ⊙ b`, accumulated in f64.
fn sum_product(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// The Gram the row error is measured by: dampened by `damp` (relative to the mean of its
/// diagonal), and with the bias column (if any) eliminated (its Schur complement: the error
/// left once the bias has taken up its mean).
fn reduced(gram: Gram, ne0: usize, damp: f64) -> Array2<f32> {
    // Built in f32 (each entry computed in f64): no f64 copy of the whole Gram is held.
    let bias = (gram.all.nrows() > ne0).then(|| {
        let nb = gram.at(ne0, ne0).max(1e-30);
        (ndarray::Array1::from_shape_fn(ne0, |i| gram.at(i, ne0)), nb)
    });
    let mut h = Array2::<f32>::zeros((ne0, ne0));
    h.as_slice_mut()
        .expect("standard layout")
        .par_chunks_mut(ne0.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                let g = gram.at(i, j);
                *v = match &bias {
                    Some((col, nb)) => (g - col[i] * col[j] / nb) as f32,
                    None => g as f32,
                };
            }
        });
    let mean = (0..ne0).map(|i| h[[i, i]] as f64).sum::<f64>() / ne0.max(1) as f64;
    let add = (damp * mean.max(1e-30)) as f32;
    for i in 0..ne0 {
        h[[i, i]] += add;
    }
    h
}

/// Rows searched together by [`search_rows`]: each move reads one row of `H`, which the rows of
/// a group then share while it is in cache (a row of `H` at d_ffn 8192 is 32 KB; the whole of
/// `H`, 268 MB, is read from memory once per sweep of a group rather than once per move).
const GROUP: usize = 16;

/// A group of rows: each starts from `q` (ggml's rounding of its target; `g` = H·(q − t)ᵀ) and
/// moves weights a grid step at a time while `e·H·eᵀ` falls. Returns each row's chosen values
/// and how many weights differ from `q`. Rows are independent: searched alone, each gives the
/// same result.
fn search_rows(grid: Grid, q: &[f32], g: &[f32], h: &Array2<f32>) -> Vec<(Vec<f32>, usize)> {
    let n = h.nrows();
    let mut rows: Vec<RowSearch> = q
        .chunks(n)
        .zip(g.chunks(n))
        .map(|(q, g)| RowSearch::new(grid, q, g))
        .collect();
    for _ in 0..SWEEPS {
        let mut active: Vec<&mut RowSearch> = rows.iter_mut().filter(|r| r.changed).collect();
        if active.is_empty() {
            break;
        }
        for r in active.iter_mut() {
            r.changed = false;
        }
        let h = h.as_slice().expect("standard layout");
        for j in 0..n {
            let hj = &h[j * n..(j + 1) * n];
            let hjj = hj[j] as f64;
            for r in active.iter_mut() {
                r.try_move(j, hjj, hj);
            }
        }
    }
    rows.into_iter().map(RowSearch::finish).collect()
}

/// One row's search in progress.
struct RowSearch {
    code: Vec<i32>,
    start: Vec<i32>,
    /// per weight: its block's step (0 where the block cannot move)
    step: Vec<f64>,
    /// per weight: its block's highest code
    top: Vec<i32>,
    /// per weight: it holds its block's grid (a block's extremes: its lowest and highest code,
    /// or for Q4_0/Q5_0 the code of its largest magnitude)
    frozen: Vec<bool>,
    /// the values, moved from ggml's
    val: Vec<f64>,
    /// `H·(val − t)ᵀ`, kept up to date
    g: Vec<f32>,
    /// a move was made in the current sweep
    changed: bool,
}

impl RowSearch {
    fn new(grid: Grid, q: &[f32], g: &[f32]) -> RowSearch {
        let n = q.len();
        let bs = grid.sub;
        let mut code = vec![0i32; n];
        let mut step = vec![0f64; n];
        let mut top = vec![0i32; n];
        let mut frozen = vec![true; n];
        for b in (0..n).step_by(bs) {
            let Some((d, b0, last)) = block_grid(grid, &q[b..b + bs]) else {
                continue;
            };
            for i in b..b + bs {
                step[i] = d;
                top[i] = last;
                code[i] = ((q[i] as f64 - b0) / d).round() as i32;
                frozen[i] = code[i] == 0 || (!grid.extreme_low && code[i] == last);
            }
        }
        RowSearch {
            start: code.clone(),
            code,
            step,
            top,
            frozen,
            val: q.iter().map(|&v| v as f64).collect(),
            g: g.to_vec(),
            changed: true,
        }
    }

    /// Move weight `j` one step where that lowers the error (`hj`: row `j` of `H`, `hjj` its
    /// diagonal entry).
    fn try_move(&mut self, j: usize, hjj: f64, hj: &[f32]) {
        if self.frozen[j] {
            return;
        }
        let d = self.step[j];
        // Moving val_j by s·d changes e·H·eᵀ by d²·H_jj + 2·s·d·g_j.
        let gj = self.g[j] as f64;
        let s: i32 = if d * gj > 0.0 { -1 } else { 1 };
        let k = self.code[j] + s;
        if k < 0 || k > self.top[j] {
            return;
        }
        let dv = s as f64 * d;
        if dv * dv * hjj + 2.0 * dv * gj >= 0.0 {
            return;
        }
        self.code[j] = k;
        self.val[j] += dv;
        // H is symmetric: its row j is its column j, and contiguous.
        let dv = dv as f32;
        for (gi, hi) in self.g.iter_mut().zip(hj) {
            *gi += dv * *hi;
        }
        self.changed = true;
    }

    fn finish(self) -> (Vec<f32>, usize) {
        let moved = self
            .code
            .iter()
            .zip(&self.start)
            .filter(|(a, b)| a != b)
            .count();
        (self.val.into_iter().map(|v| v as f32).collect(), moved)
    }
}

/// A block's step, base and highest code (value = `base + code·step`) from ggml's dequantized
/// rounding of it; `None` where it cannot be moved on (all one value, or off any one grid).
fn block_grid(grid: Grid, v: &[f32]) -> Option<(f64, f64, i32)> {
    if grid.inferred {
        return inferred_grid(grid, v);
    }
    let (d, base) = if grid.with_min {
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        ((hi - lo) / (grid.levels - 1) as f64, lo)
    } else {
        let extreme = v
            .iter()
            .copied()
            .fold(0f32, |a, x| if x.abs() > a.abs() { x } else { a }) as f64;
        let off = grid.offset as f64;
        let d = if grid.extreme_low {
            -extreme / off
        } else {
            extreme.abs() / off
        };
        (d, -off * d)
    };
    (d > 0.0).then_some((d, base, grid.levels - 1))
}

/// A k-quant sub-block's grid read off its values: the smallest gap between distinct values is
/// the step (a multiple of the true one where codes skip, which only makes moves coarser), the
/// lowest value code 0, the highest the top code; `None` unless every value sits on that grid.
fn inferred_grid(grid: Grid, v: &[f32]) -> Option<(f64, f64, i32)> {
    let mut sorted: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let span = hi - lo;
    if span <= 0.0 || !span.is_finite() {
        return None;
    }
    let d = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&g| g > 1e-4 * span)
        .fold(f64::INFINITY, f64::min);
    let last = (span / d).round();
    if last < 1.0 || last >= grid.levels as f64 {
        return None;
    }
    let on_grid = sorted.iter().all(|&x| {
        let k = (x - lo) / d;
        (k - k.round()).abs() < 1e-2
    });
    on_grid.then_some((d, lo, last as i32))
}

/// `(tr(C·H·Cᵀ), tr(C·H·Dᵀ), tr(D·H·Dᵀ))` for `rows × n` matrices and the leading `n × n` block
/// of `gram`: the stored change `C` against the edit `D` on the layer's output. One product
/// is held at a time and the Gram is read in place (at d_ffn 8192 it is 268 MB).
pub fn h_products(c: ArrayView2<f32>, d: ArrayView2<f32>, gram: &Array2<f32>) -> (f64, f64, f64) {
    let n = c.ncols();
    let h = gram.slice(s![..n, ..n]);
    let ch = par_dot(c, h);
    let (cc, cd) = (sum_product(ch.view(), c), sum_product(ch.view(), d));
    drop(ch);
    let dd = sum_product(par_dot(d, h).view(), d);
    (cc, cd, dd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::lcg;

    /// Weights on `ty`'s grid, an edit under half a step, correlated inputs.
    fn problem(ty: GgmlType, bias: bool) -> (Vec<f32>, Vec<f32>, Array2<f32>, Array2<f32>) {
        // One 256-wide super-block per row for the k-quants.
        let (rows, n) = (16, 128.max(ty.block_size() as usize));
        let mut s = 11u64;
        let mix = Array2::from_shape_fn(
            (n, n),
            |(i, j)| {
                if i == j {
                    1.0
                } else {
                    0.3 * lcg(&mut s)
                }
            },
        );
        // 2048 draws: the first 1024 are the calibration inputs (the Gram), the rest new ones.
        let z = Array2::from_shape_fn((2048, n), |_| lcg(&mut s));
        let mut x = z.dot(&mix);
        if bias {
            x.mapv_inplace(|v| v + 0.5);
        }
        let w0: Vec<f32> = (0..rows * n).map(|_| lcg(&mut s)).collect();
        let w = dequantize(
            ty,
            &quantize(ty, &w0, n as u64, None).unwrap(),
            (rows * n) as u64,
        )
        .unwrap();
        let target: Vec<f32> = w.iter().map(|a| a + 0.05 * lcg(&mut s)).collect();
        let mut xa = Array2::<f32>::ones((1024, n + bias as usize));
        xa.slice_mut(s![.., ..n]).assign(&x.slice(s![..1024, ..]));
        let g = xa.t().dot(&xa);
        (w, target, x, g)
    }

    fn out_err(q: &[f32], t: &[f32], x: &Array2<f32>, bias: Option<&[f32]>) -> f64 {
        let n = x.ncols();
        let e = Array2::from_shape_vec(
            (q.len() / n, n),
            q.iter().zip(t).map(|(a, b)| a - b).collect(),
        )
        .unwrap();
        let mut o = e.dot(&x.t());
        if let Some(b) = bias {
            for (mut row, bv) in o.rows_mut().into_iter().zip(b) {
                row += *bv;
            }
        }
        o.iter().map(|v| (*v as f64).powi(2)).sum()
    }

    #[test]
    fn rows_searched_as_a_group_end_as_each_searched_alone() {
        let ty = GgmlType::Q4_K;
        let (_, target, _, g) = problem(ty, false);
        let n = target.len() / 16;
        let first = dequantize(
            ty,
            &quantize(ty, &target, n as u64, None).unwrap(),
            16 * n as u64,
        )
        .unwrap();
        let p = Problem {
            grid: grid(ty).unwrap(),
            ne0: n,
            target: &target,
            first: &first,
        };
        let h = reduced(Gram::all(&g), n, 0.01);
        let g0 = par_dot(p.error(&first).view(), h.view());
        let g0 = g0.as_slice().unwrap();
        let together = search_rows(p.grid, &first, g0, &h);
        assert_eq!(together.len(), 16);
        assert!(
            together.iter().map(|r| r.1).sum::<usize>() > 0,
            "nothing moved"
        );
        for (r, got) in together.iter().enumerate() {
            let alone = search_rows(
                p.grid,
                &first[r * n..(r + 1) * n],
                &g0[r * n..(r + 1) * n],
                &h,
            );
            assert_eq!(&alone[0], got, "row {r}");
        }
    }

    #[test]
    fn chosen_rounding_keeps_a_small_edit_where_nearest_loses_it() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let (w, target, x, g) = problem(ty, false);
            let n = x.ncols();
            let h = Hessian {
                gram: g,
                val: None,
                bias: None,
                search: true,
            };
            let r = round(ty, &target, n, &h).unwrap();
            let near = quantize(ty, &target, n as u64, None).unwrap();
            let near = dequantize(ty, &near, target.len() as u64).unwrap();
            let (er, en, e0) = (
                out_err(&r.stored, &target, &x, None),
                out_err(&near, &target, &x, None),
                out_err(&w, &target, &x, None),
            );
            assert!(r.moved > 0, "{ty:?}: nothing moved");
            // Better than both nearest rounding and leaving the weights as they were.
            assert!(
                er < 0.9 * en.min(e0),
                "{ty:?}: chosen {er}, nearest {en}, unedited {e0}"
            );
            // The codec reproduces the chosen values: the bytes are what `stored` says.
            let back = dequantize(ty, &r.data, target.len() as u64).unwrap();
            assert_eq!(back, r.stored);
            assert_eq!(r.mismatched, 0, "{ty:?}");
        }
    }

    /// `ty`'s problem rounded with the damping chosen on validation rows (the last quarter of
    /// the calibration inputs), and the output errors on new draws of the chosen, the nearest
    /// and the unedited weights.
    fn on_new_inputs(ty: GgmlType) -> (Rounded, Vec<f32>, [f64; 3]) {
        let (w, target, x, g) = problem(ty, false);
        let n = x.ncols();
        let xv = x.slice(s![768..1024, ..]).to_owned();
        let fresh = x.slice(s![1024.., ..]).to_owned();
        let h = Hessian {
            gram: g,
            val: Some(xv.t().dot(&xv)),
            bias: None,
            search: true,
        };
        let r = round(ty, &target, n, &h).unwrap();
        let near = quantize(ty, &target, n as u64, None).unwrap();
        let near = dequantize(ty, &near, target.len() as u64).unwrap();
        let errors = [&r.stored, &near, &w].map(|q| out_err(q, &target, &fresh, None));
        (r, target, errors)
    }

    #[test]
    fn the_damping_chosen_on_validation_rows_carries_over_to_new_inputs() {
        let (r, _, [er, en, _]) = on_new_inputs(GgmlType::Q4_1);
        assert!(r.damp.is_some(), "nearest kept");
        assert!(er < en, "chosen {er}, nearest {en} on new inputs");
    }

    #[test]
    fn k_quant_rounding_keeps_the_output_closer_than_nearest_on_new_inputs() {
        for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let (r, target, [er, en, e0]) = on_new_inputs(ty);
            assert!(r.moved > 0 && r.damp.is_some(), "{ty:?}: nothing moved");
            assert!(
                er < 0.9 * en.min(e0),
                "{ty:?}: chosen {er}, nearest {en}, unedited {e0} on new inputs"
            );
            // The bytes are what `stored` says, and the codec kept most chosen weights as chosen
            // (blocks it did not were stored as nearest rounding).
            let back = dequantize(ty, &r.data, target.len() as u64).unwrap();
            assert_eq!(back, r.stored);
            assert!(
                r.mismatched * 4 < target.len(),
                "{ty:?}: {} of {} weights not stored as chosen",
                r.mismatched,
                target.len()
            );
        }
    }

    #[test]
    fn a_sub_block_off_one_grid_is_left_alone() {
        let grid = grid(GgmlType::Q4_K).unwrap();
        let on: Vec<f32> = (0..32).map(|i| -0.3 + 0.05 * (i % 16) as f32).collect();
        let (d, base, top) = inferred_grid(grid, &on).unwrap();
        assert!((d - 0.05).abs() < 1e-6 && (base + 0.3).abs() < 1e-6 && top == 15);
        let mut off = on.clone();
        off[5] += 0.02;
        assert!(inferred_grid(grid, &off).is_none());
        assert!(inferred_grid(grid, &[0.25; 32]).is_none());
    }

    #[test]
    fn a_bias_takes_up_the_mean_error() {
        let (_, target, x, g) = problem(GgmlType::Q4_1, true);
        let n = x.ncols();
        let h = Hessian {
            gram: g,
            val: None,
            bias: Some(("b".into(), "w".into())),
            search: true,
        };
        let r = round(GgmlType::Q4_1, &target, n, &h).unwrap();
        let bias = r.bias.as_deref().unwrap();
        let with = out_err(&r.stored, &target, &x, Some(bias));
        let without = out_err(&r.stored, &target, &x, None);
        assert!(with < without, "{with} vs {without}");
    }
}
