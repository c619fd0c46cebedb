//! Ridge least squares from accumulated normal equations, with λ chosen on a validation split.
//!
//! A problem maps features `x` (width `d`) to targets `y` (width `m`) through `y ≈ xᵀW + b`.
//! Rows are streamed in; only `[x,1]ᵀ[x,1]`, `[x,1]ᵀy` (in f32: each block's products are f32
//! already) and `Σ‖y‖²` are kept, separately for the training and validation rows.
//!
//! The solve itself (an f32 Cholesky factor checked and refined in f64) is in `solve`; the
//! accumulated sums of one split in `normal`.
//!
//! Choosing λ scores grid values on the validation rows, from the largest down while the error
//! falls. With many targets that search solves against a random sketch `C·S` of the targets
//! (`S` is `m × k` with `±1/√k` entries, so `E[S·Sᵀ] = I` and the sketched validation error is
//! an unbiased estimate of the exact one); only the winner is solved against all `m` columns.

mod normal;
mod solve;

use anyhow::{bail, Result};
use ndarray::{s, Array1, Array2};

use normal::Normal;
use solve::solve_normal;

/// Targets kept when λ is searched: above this many, the search runs on a sketch of them.
pub const SKETCH: usize = 128;

/// An `m × k` sketch with entries `±1/√k`, from a fixed seed (deterministic across runs).
fn sketch(m: usize, k: usize) -> Array2<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let v = 1.0 / (k as f32).sqrt();
    Array2::from_shape_fn((m, k), |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if state >> 63 == 0 {
            v
        } else {
            -v
        }
    })
}

/// A streamed ridge regression problem with an optional (unpenalised) intercept.
#[derive(Debug, Clone)]
pub struct Ridge {
    d: usize,
    m: usize,
    intercept: bool,
    train: Normal,
    val: Normal,
    /// `train` holds every row's sums (the validation rows folded in) once solved
    merged: bool,
    pending: Vec<(Vec<f32>, Vec<f32>, bool)>,
}

/// How λ is set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Lambda {
    /// chosen on the validation rows among multiples of `tr(G)/d`
    Auto,
    /// this value, relative to `tr(G)/d`
    Fixed(f64),
}

/// A solved problem.
#[derive(Debug, Clone)]
pub struct Solution {
    /// `d × m` weights (worked out in f64, kept in f32: see the solve)
    pub w: Array2<f32>,
    /// `m` intercept (zero without one)
    pub b: Array1<f32>,
    /// λ relative to `tr(G)/d`
    pub lambda: f64,
    /// validation error relative to the error of predicting zero (1 = no better than nothing);
    /// estimated through the sketch when there are more than [`SKETCH`] targets
    pub val_rel_error: f64,
    /// training rows
    pub n_train: usize,
    /// validation rows
    pub n_val: usize,
}

/// Relative λ candidates for [`Lambda::Auto`].
pub const LAMBDA_GRID: [f64; 5] = [1e-3, 1e-2, 3e-2, 1e-1, 1.0];

const BLOCK: usize = 512;

/// The index of the [`LAMBDA_GRID`] value nearest `l` (on a log scale).
fn nearest_grid_index(l: f64) -> usize {
    let d = |g: f64| (g.ln() - l.max(1e-300).ln()).abs();
    (0..LAMBDA_GRID.len())
        .min_by(|&a, &b| d(LAMBDA_GRID[a]).total_cmp(&d(LAMBDA_GRID[b])))
        .unwrap_or(LAMBDA_GRID.len() - 1)
}

impl Ridge {
    /// A problem with `d` features and `m` targets.
    pub fn new(d: usize, m: usize, intercept: bool) -> Ridge {
        let w = d + intercept as usize;
        Ridge {
            d,
            m,
            intercept,
            train: Normal::new(w, m),
            val: Normal::new(w, m),
            merged: false,
            pending: Vec::new(),
        }
    }

    /// Feature width.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Add one row; `validation` rows are held out for choosing λ.
    pub fn add(&mut self, x: &[f32], y: &[f32], validation: bool) {
        self.add_weighted(x, y, 1.0, validation);
    }

    /// Add one row counted `w` times in the squared error (`x` and `y` scaled by `√w`).
    pub fn add_weighted(&mut self, x: &[f32], y: &[f32], w: f32, validation: bool) {
        debug_assert_eq!(x.len(), self.d);
        debug_assert_eq!(y.len(), self.m);
        let s = w.sqrt();
        let mut xr = Vec::with_capacity(x.len() + 1);
        xr.extend(x.iter().map(|v| v * s));
        if self.intercept {
            xr.push(s);
        }
        self.pending
            .push((xr, y.iter().map(|v| v * s).collect(), validation));
        if self.pending.len() >= BLOCK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let width = self.d + self.intercept as usize;
        for split in [false, true] {
            let rows: Vec<&(Vec<f32>, Vec<f32>, bool)> =
                self.pending.iter().filter(|r| r.2 == split).collect();
            if rows.is_empty() {
                continue;
            }
            let mut x = Array2::<f32>::zeros((rows.len(), width));
            let mut y = Array2::<f32>::zeros((rows.len(), self.m));
            for (i, r) in rows.iter().enumerate() {
                x.row_mut(i).assign(&ndarray::ArrayView1::from(&r.0[..]));
                y.row_mut(i).assign(&ndarray::ArrayView1::from(&r.1[..]));
            }
            let n = if split {
                &mut self.val
            } else {
                &mut self.train
            };
            n.add_block(&x, &y);
        }
        self.pending.clear();
    }

    /// Fold in the pending rows and complete the Grams' lower triangles.
    fn finish(&mut self) {
        if !self.merged {
            self.flush();
            self.train.mirror();
            self.val.mirror();
        }
    }

    /// Feature `i`'s Σx² over every row.
    fn total_power(&self, i: usize) -> f64 {
        let v = self.train.g[[i, i]] as f64;
        if self.merged {
            v
        } else {
            v + self.val.g[[i, i]] as f64
        }
    }

    /// Every row's sums: the training split with the validation split folded in.
    fn merge(&mut self) {
        self.finish();
        if !self.merged {
            self.train.absorb(&self.val);
            self.merged = true;
        }
    }

    /// Mean of the diagonal of the feature Gram (training and validation rows), per row:
    /// the per-feature mean square, used as importance weights when requantizing.
    pub fn feature_power(&mut self) -> Vec<f32> {
        self.finish();
        let n = (self.train.n + if self.merged { 0 } else { self.val.n }).max(1) as f64;
        (0..self.d)
            .map(|i| (self.total_power(i) / n) as f32)
            .collect()
    }

    /// `Σ [x,1][x,1]ᵀ` over every row (training and validation) and over the validation rows
    /// alone, `(d+1)²` with an intercept: what output-aware rounding weighs its error by. Moved
    /// out, not copied: the problem is spent afterwards.
    pub fn grams(&mut self) -> (Array2<f32>, Array2<f32>) {
        self.merge();
        (
            std::mem::take(&mut self.train.g),
            std::mem::take(&mut self.val.g),
        )
    }

    /// The unit λ is given in: `tr(G)/d` over all rows (each feature's Σx², averaged over features).
    fn lambda_unit(&self) -> f64 {
        let tr: f64 = (0..self.d).map(|i| self.total_power(i)).sum();
        (tr / self.d.max(1) as f64).max(1e-12)
    }

    /// Solve. With [`Lambda::Auto`] grid values, from the largest down to the validation error's
    /// minimum, are fitted on the training rows and scored on the validation rows (through a
    /// sketch of the targets when there are more than [`SKETCH`]); the winner is refitted on all
    /// rows.
    pub fn solve(&mut self, lambda: Lambda) -> Result<Solution> {
        self.solve_from(lambda, None)
    }

    /// [`Ridge::solve`], with [`Lambda::Auto`]'s walk starting at the grid value nearest
    /// `start` (the λ a similar problem chose, e.g. the layer before's) instead of the largest:
    /// down while the validation error falls, else up while it falls. For an error unimodal in
    /// λ the winner is the same, found with fewer factorisations when `start` is near it.
    pub fn solve_from(&mut self, lambda: Lambda, start: Option<f64>) -> Result<Solution> {
        if self.merged {
            bail!("this least-squares problem was solved already");
        }
        self.finish();
        if self.train.n + self.val.n == 0 {
            bail!("no calibration rows to fit");
        }
        let scale = self.lambda_unit();
        let width = self.train.g.nrows();
        // The one scratch matrix every factorisation is made in.
        let mut scratch = Array2::<f32>::zeros((width, width));
        let scored = self.val.n > 0 && self.train.n > 0;
        // Scores a λ: fitted on the training rows, its validation error less `Σ‖y‖²` (through
        // a sketch of the targets when there are many).
        let mut score = {
            let (ct, cv) = match (scored, self.m > SKETCH) {
                (false, _) => (Array2::zeros((0, 0)), Array2::zeros((0, 0))),
                (true, true) => {
                    let s = sketch(self.m, SKETCH);
                    (self.train.c.dot(&s), self.val.c.dot(&s))
                }
                (true, false) => (self.train.c.clone(), self.val.c.clone()),
            };
            let cv = cv.mapv(f64::from);
            let (train, val, d) = (&self.train, &self.val, self.d);
            let scratch = &mut scratch;
            move |l: f64| -> Result<f64> {
                let w = solve_normal(&train.g, &ct, d, l * scale, scratch)?;
                Ok(val.error_less_yy(&w.mapv(f64::from), &cv))
            }
        };
        let rel = |e: f64| (e + self.val.yy) / self.val.yy.max(1e-300);
        let (lambda, val_rel_error) = match lambda {
            Lambda::Fixed(l) if scored => (l, rel(score(l)?)),
            Lambda::Fixed(l) => (l, f64::NAN),
            Lambda::Auto if !scored => (1e-2, f64::NAN),
            Lambda::Auto => {
                // Walk the grid from `start` while the validation error falls: the error of a
                // ridge fit is (near) unimodal in λ, and the walk saves the factorisations an
                // exhaustive search spends beyond the minimum.
                let top = LAMBDA_GRID.len() - 1;
                let first = start.map_or(top, nearest_grid_index);
                let (mut i, mut e) = (first, score(LAMBDA_GRID[first])?);
                while i > 0 {
                    let below = score(LAMBDA_GRID[i - 1])?;
                    if below >= e {
                        break;
                    }
                    (i, e) = (i - 1, below);
                }
                // Up only where the walk did not go down.
                while i >= first && i < top {
                    let above = score(LAMBDA_GRID[i + 1])?;
                    if above >= e {
                        break;
                    }
                    (i, e) = (i + 1, above);
                }
                (LAMBDA_GRID[i], rel(e))
            }
        };
        drop(score);
        let (n_train, n_val) = (self.train.n, self.val.n);
        self.merge();
        let w_full = solve_normal(
            &self.train.g,
            &self.train.c,
            self.d,
            lambda * scale,
            &mut scratch,
        )?;
        drop(scratch);
        let (w, b) = if self.intercept {
            let b = w_full.row(self.d).to_owned();
            (w_full.slice_move(s![..self.d, ..]), b)
        } else {
            (w_full, Array1::zeros(self.m))
        };
        Ok(Solution {
            w,
            b,
            lambda,
            val_rel_error,
            n_train,
            n_val,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::solve::{ridge_diagonal, solve_normal_f64};
    use super::*;
    use crate::testing::lcg;
    use rayon::prelude::*;

    #[test]
    fn recovers_a_linear_map_with_intercept() {
        let (d, m) = (6, 3);
        let mut s = 7u64;
        let w: Vec<f32> = (0..d * m).map(|_| lcg(&mut s)).collect();
        let b = [0.5f32, -1.0, 2.0];
        let mut r = Ridge::new(d, m, true);
        for i in 0..400 {
            let x: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..m)
                .map(|j| b[j] + (0..d).map(|k| x[k] * w[k * m + j]).sum::<f32>())
                .collect();
            r.add(&x, &y, i % 5 == 0);
        }
        let sol = r.solve(Lambda::Fixed(1e-8)).unwrap();
        for k in 0..d {
            for j in 0..m {
                assert!((sol.w[[k, j]] - w[k * m + j]).abs() < 1e-4);
            }
        }
        for (got, want) in sol.b.iter().zip(b) {
            assert!((got - want).abs() < 1e-4);
        }
    }

    #[test]
    fn a_row_weighted_w_times_is_the_row_added_w_times() {
        let (d, m) = (5, 2);
        let mut s = 19u64;
        let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..60)
            .map(|_| {
                let x = (0..d).map(|_| lcg(&mut s)).collect();
                (x, (0..m).map(|_| lcg(&mut s)).collect())
            })
            .collect();
        let (mut weighted, mut repeated) = (Ridge::new(d, m, true), Ridge::new(d, m, true));
        let mut once = Ridge::new(d, m, true);
        for (i, (x, y)) in rows.iter().enumerate() {
            let w = if i % 7 == 0 { 3 } else { 1 };
            weighted.add_weighted(x, y, w as f32, i % 5 == 0);
            for _ in 0..w {
                repeated.add(x, y, i % 5 == 0);
            }
            once.add(x, y, i % 5 == 0);
        }
        let (a, b) = (
            weighted.solve(Lambda::Fixed(1e-3)).unwrap(),
            repeated.solve(Lambda::Fixed(1e-3)).unwrap(),
        );
        let err = (&a.w - &b.w).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
        assert!(
            err < 1e-4,
            "weighted and repeated solutions differ by {err}"
        );
        // and the weight matters: counted once, the solution is another
        let c = once.solve(Lambda::Fixed(1e-3)).unwrap();
        let diff = (&a.w - &c.w).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
        assert!(diff > 1e-3, "weights changed nothing ({diff})");
    }

    #[test]
    fn auto_lambda_prefers_more_ridge_on_noise() {
        // Pure-noise targets: the best model predicts ~0, so validation picks a large λ.
        let (d, m) = (40, 2);
        let mut s = 3u64;
        let mut r = Ridge::new(d, m, false);
        for i in 0..120 {
            let x: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..m).map(|_| lcg(&mut s)).collect();
            r.add(&x, &y, i % 4 == 0);
        }
        let sol = r.solve(Lambda::Auto).unwrap();
        assert!(sol.lambda >= 0.1, "λ = {}", sol.lambda);
        assert!(sol.val_rel_error.is_finite());
    }

    /// `rows` rows of `y = xᵀW + noise·ε` (`d` features, `m` targets; every third row for
    /// validation) from the generator seeded with `seed`.
    fn noisy_linear(
        d: usize,
        m: usize,
        rows: usize,
        noise: f32,
        seed: u64,
        intercept: bool,
    ) -> Ridge {
        let mut s = seed;
        let w: Vec<f32> = (0..d * m).map(|_| 0.3 * lcg(&mut s)).collect();
        let mut r = Ridge::new(d, m, intercept);
        for i in 0..rows {
            let x: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..m)
                .map(|j| (0..d).map(|k| x[k] * w[k * m + j]).sum::<f32>() + noise * lcg(&mut s))
                .collect();
            r.add(&x, &y, i % 3 == 0);
        }
        r
    }

    #[test]
    fn the_walk_from_any_start_finds_the_walk_from_the_top() {
        // Targets with moderate noise: the best λ lies inside the grid, so walks started
        // above it must go down and walks started below it must go up.
        let r = noisy_linear(30, 3, 90, 0.5, 5, true);
        let top = r.clone().solve(Lambda::Auto).unwrap();
        let inside = LAMBDA_GRID[1..LAMBDA_GRID.len() - 1].contains(&top.lambda);
        assert!(inside, "λ = {} is at an end of the grid", top.lambda);
        for &start in &LAMBDA_GRID {
            let sol = r.clone().solve_from(Lambda::Auto, Some(start)).unwrap();
            assert_eq!(sol.lambda, top.lambda, "from {start}");
            assert_eq!(sol.w, top.w, "from {start}");
        }
        assert_eq!(nearest_grid_index(0.04), 2);
        assert_eq!(nearest_grid_index(7.0), LAMBDA_GRID.len() - 1);
    }

    #[test]
    fn a_fixed_lambda_is_scored_on_the_validation_rows_as_the_search_scores_it() {
        let r = noisy_linear(30, 3, 90, 0.5, 5, true);
        let auto = r.clone().solve(Lambda::Auto).unwrap();
        let fixed = r.clone().solve(Lambda::Fixed(auto.lambda)).unwrap();
        assert_eq!(fixed.w, auto.w);
        assert!((fixed.val_rel_error - auto.val_rel_error).abs() < 1e-12);
        // A λ the search passed over scores worse than the one it chose.
        let other = LAMBDA_GRID[LAMBDA_GRID.len() - 1];
        let worse = r.clone().solve(Lambda::Fixed(other)).unwrap();
        assert!(worse.val_rel_error > auto.val_rel_error, "{worse:?}");
    }

    #[test]
    fn sketched_search_picks_a_lambda_as_good_as_the_exact_one() {
        // Many noisy targets: λ matters, and the search runs on a sketch of the 400 targets.
        // Its choice must be (near) the exact search's best.
        let (d, m) = (60, 400);
        let mut r = noisy_linear(d, m, 300, 0.6, 11, false);
        let sol = r.clone().solve(Lambda::Auto).unwrap();
        r.finish();
        let scale = r.lambda_unit();
        let cv = r.val.c.mapv(f64::from);
        let extra = |l: f64| ridge_diagonal(&r.train.g, d, l * scale);
        let exact = |l: f64| {
            let w = solve_normal_f64(&r.train.g, &r.train.c, &extra(l)).unwrap();
            (r.val.error_less_yy(&w.mapv(f64::from), &cv) + r.val.yy) / r.val.yy
        };
        let best = LAMBDA_GRID
            .iter()
            .map(|&l| exact(l))
            .fold(f64::MAX, f64::min);
        let chosen = exact(sol.lambda);
        assert!(chosen <= best * 1.02, "chosen {chosen} best {best}");
        assert!(
            (sol.val_rel_error - chosen).abs() < 0.1 * chosen,
            "estimate {} exact {chosen}",
            sol.val_rel_error
        );
        // The best λ is inside the grid and both ends are clearly worse: a wrong pick shows.
        assert!(exact(LAMBDA_GRID[0]) > best * 1.05);
        assert!(exact(LAMBDA_GRID[LAMBDA_GRID.len() - 1]) > best * 1.05);
    }

    #[test]
    fn banded_gram_is_the_whole_symmetric_gram() {
        // 13 features + intercept over 8 bands (uneven), rows over three flushes of the block.
        let (d, m) = (13, 3);
        let mut s = 5u64;
        let mut r = Ridge::new(d, m, true);
        let mut want = Array2::<f64>::zeros((d + 1, d + 1));
        for i in 0..1100 {
            let mut x: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
            let y: Vec<f32> = (0..m).map(|_| lcg(&mut s)).collect();
            r.add(&x, &y, i % 4 == 0);
            x.push(1.0);
            for a in 0..=d {
                for b in 0..=d {
                    want[[a, b]] += x[a] as f64 * x[b] as f64;
                }
            }
        }
        let (all, _) = r.grams();
        for a in 0..=d {
            for b in 0..=d {
                let (g, w) = (all[[a, b]] as f64, want[[a, b]]);
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "[{a},{b}] {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn problems_solved_at_once_match_one_at_a_time() {
        // What parallel-mode patching does: several layers' systems on rayon's threads, each
        // with single-threaded LAPACK.
        let (d, m) = (300, 40);
        let problems: Vec<Ridge> = (0..4u64)
            .map(|k| {
                let mut s = 100 + k;
                let mut r = Ridge::new(d, m, true);
                for i in 0..700 {
                    let x: Vec<f32> = (0..d).map(|_| lcg(&mut s)).collect();
                    let y: Vec<f32> = (0..m).map(|j| x[j] - x[j + 1] + lcg(&mut s)).collect();
                    r.add(&x, &y, i % 5 == 0);
                }
                r
            })
            .collect();
        let one_by_one: Vec<Solution> = problems
            .iter()
            .map(|p| p.clone().solve(Lambda::Auto).unwrap())
            .collect();
        let at_once: Vec<Solution> = crate::engine::with_single_threaded_lapack(|| {
            problems
                .clone()
                .into_par_iter()
                .map(|mut p| p.solve(Lambda::Auto).unwrap())
                .collect()
        });
        for (a, b) in one_by_one.iter().zip(&at_once) {
            assert_eq!(a.lambda, b.lambda);
            let scale = a.w.iter().map(|v| v.abs()).fold(0.0, f32::max);
            let diff = (&a.w - &b.w).iter().map(|v| v.abs()).fold(0.0, f32::max);
            // The f32 factor's answer is kept here (well conditioned): the two LAPACK thread
            // counts sum in other orders, to f32's precision.
            assert!(
                diff <= 1e-5 * scale,
                "max difference {diff} (scale {scale})"
            );
        }
    }

    #[test]
    fn intercept_only_is_the_mean() {
        let mut r = Ridge::new(0, 2, true);
        for (i, y) in [[1.0f32, 2.0], [3.0, 6.0], [5.0, 10.0]].iter().enumerate() {
            r.add(&[], y, i == 9);
        }
        let sol = r.solve(Lambda::Auto).unwrap();
        assert!((sol.b[0] - 3.0).abs() < 1e-6 && (sol.b[1] - 6.0).abs() < 1e-6);
    }
}
