//! Solving `(G + λ·I_d) W = C` from an f32 Gram.
//!
//! `G + λI` is factored by Cholesky in f32 (LAPACK through ndarray-linalg) in one scratch
//! matrix, reused for every λ. Its answer is checked with residuals computed in f64 (a band of
//! rows at a time) on a sample of columns and kept where it is within 1e-2 of the f64 answer,
//! otherwise refined with f64 residuals, so no f64 copy of the Gram is ever held: two stored
//! Grams and one scratch, 1.5× an f64 Gram in all. Where the f32 factor is too coarse
//! (refinement does not converge) the system is solved in f64 instead. No inverse is formed.

use anyhow::Result;
use ndarray::{s, Array2, Axis};
use ndarray_linalg::{cholesky::CholeskyInplace, Diag, SolveTriangularInto, UPLO};

use super::normal::gram_dot;

/// Refinement steps at most before the f64 solve takes over.
const REFINE_STEPS: usize = 4;

/// A solution whose next refinement step would change it by at most this fraction of its
/// largest entry is kept. A relative 1e-2 is a small part of what storage does to the change
/// (a 4-bit grid step is ~1/16 of a block's range, and the change is added to weights larger
/// than itself) and of what the ridge's own shrinkage does at the default λ; on the
/// Llama-3.2-1B-sized file the f32 factor's answer is 1.4e-3–7.8e-3 off, so it stands, where a
/// 1e-3 bound paid two f64 passes over every column (27 of a layer's 30 s).
const REFINED: f64 = 1e-2;

/// The diagonal `(G + λ·I_d)` adds to `G` (the intercept row is not penalised beyond a tiny
/// jitter).
pub(super) fn ridge_diagonal(g: &Array2<f32>, d: usize, lambda: f64) -> Vec<f64> {
    (0..g.nrows())
        .map(|i| {
            if i < d {
                lambda
            } else {
                1e-9 * (1.0 + g[[i, i]] as f64)
            }
        })
        .collect()
}

/// Columns of `C` solved at a time: the f64 working set beside the Gram stays small.
const COLUMNS: usize = 512;

/// Solve `(G + λ·I_d) W = C`: a Cholesky factor of it in f32 (in `scratch`), refined with f64
/// residuals until the corrections are negligible; in f64 where the f32 factor is too coarse.
/// The answer is kept in f32 (each chunk of columns worked in f64 until it is done): it is
/// stored in f32 or coarser, and the whole of it in f64 would be the solve's largest array
/// after the Grams (470 MB at an 8B model's width).
pub(super) fn solve_normal(
    g: &Array2<f32>,
    c: &Array2<f32>,
    d: usize,
    lambda: f64,
    scratch: &mut Array2<f32>,
) -> Result<Array2<f32>> {
    let extra = ridge_diagonal(g, d, lambda);
    if !factor_f32(g, &extra, scratch) {
        return solve_normal_f64(g, c, &extra);
    }
    let mut w = Array2::<f32>::zeros(c.raw_dim());
    for j in (0..c.ncols()).step_by(COLUMNS) {
        let cols = s![.., j..(j + COLUMNS).min(c.ncols())];
        match refined(g, scratch, &extra, c.slice(cols).mapv(f64::from))? {
            Some(part) => w.slice_mut(cols).assign(&part.mapv(|v| v as f32)),
            None => return solve_normal_f64(g, c, &extra),
        }
    }
    Ok(w)
}

/// Factor `G + diag(extra)` by Cholesky in f32 into `scratch`; false where f32 cannot.
fn factor_f32(g: &Array2<f32>, extra: &[f64], scratch: &mut Array2<f32>) -> bool {
    scratch.assign(g);
    for (i, e) in extra.iter().enumerate() {
        scratch[[i, i]] += *e as f32;
    }
    scratch.cholesky_inplace(UPLO::Lower).is_ok()
}

/// The f32 factor's solution of `(G + diag(extra)) W = C`, refined with f64 residuals while a
/// refinement step would change it by more than [`REFINED`]. Whether it would is judged on a
/// sample of [`CHECKED`] columns (a step over every column costs as much as the solve itself),
/// before the first step and after each; `None` when the refinement does not converge.
fn refined(
    g: &Array2<f32>,
    l: &Array2<f32>,
    extra: &[f64],
    c: Array2<f64>,
) -> Result<Option<Array2<f64>>> {
    let mut w = cholesky_solve(l, c.mapv(|v| v as f32))?.mapv(f64::from);
    let sample: Vec<usize> = (0..CHECKED.min(c.ncols()))
        .map(|i| i * c.ncols() / CHECKED.min(c.ncols()))
        .collect();
    let cs = c.select(Axis(1), &sample);
    let sampled_step = |w: &Array2<f64>| -> Result<f64> {
        Ok(correction(g, l, extra, &cs, &w.select(Axis(1), &sample))?.1)
    };
    let mut next = sampled_step(&w)?;
    let mut previous = f64::INFINITY;
    for _ in 0..REFINE_STEPS {
        if next <= REFINED {
            return Ok(Some(w));
        }
        if next > 0.5 * previous {
            break;
        }
        let (delta, step) = correction(g, l, extra, &c, &w)?;
        w.zip_mut_with(&delta, |a, &b| *a += b as f64);
        previous = step;
        next = sampled_step(&w)?;
    }
    Ok((next <= REFINED).then_some(w))
}

/// Columns a solve's accuracy is checked on before it is refined.
const CHECKED: usize = 16;

/// One refinement step of `W`: the correction `δ` from the f64 residual `C − (G + diag)·W`
/// solved by the f32 factor, and its largest entry relative to `W`'s largest.
fn correction(
    g: &Array2<f32>,
    l: &Array2<f32>,
    extra: &[f64],
    c: &Array2<f64>,
    w: &Array2<f64>,
) -> Result<(Array2<f32>, f64)> {
    let r = c - &gram_dot(g, Some(extra), w);
    let delta = cholesky_solve(l, r.mapv(|v| v as f32))?;
    let step = delta.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    let size = w.iter().fold(0.0f64, |m, &v| m.max(v.abs()));
    Ok((delta, step / size.max(f64::MIN_POSITIVE)))
}

/// `W` from `L·Lᵀ·W = B` (triangular solves with every column at once).
fn cholesky_solve<A: ndarray_linalg::Scalar + ndarray_linalg::Lapack>(
    l: &Array2<A>,
    b: Array2<A>,
) -> Result<Array2<A>> {
    let y = l
        .solve_triangular_into(UPLO::Lower, Diag::NonUnit, b)
        .map_err(|e| anyhow::anyhow!("least-squares solve failed: {e}"))?;
    l.t()
        .solve_triangular_into(UPLO::Upper, Diag::NonUnit, y)
        .map_err(|e| anyhow::anyhow!("least-squares solve failed: {e}"))
}

/// `(G + diag(extra)) W = C` factored in f64 (one f64 copy of the Gram, for this call only);
/// the answer in f32, as [`solve_normal`]'s.
pub(super) fn solve_normal_f64(
    g: &Array2<f32>,
    c: &Array2<f32>,
    extra: &[f64],
) -> Result<Array2<f32>> {
    let mut a = g.mapv(f64::from);
    for (i, e) in extra.iter().enumerate() {
        a[[i, i]] += e;
    }
    a.cholesky_inplace(UPLO::Lower).map_err(|e| {
        anyhow::anyhow!("the least-squares system is singular ({e}); raise `lambda`")
    })?;
    let mut w = Array2::<f32>::zeros(c.raw_dim());
    for j in (0..c.ncols()).step_by(COLUMNS) {
        let cols = s![.., j..(j + COLUMNS).min(c.ncols())];
        w.slice_mut(cols)
            .assign(&cholesky_solve(&a, c.slice(cols).mapv(f64::from))?.mapv(|v| v as f32));
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::ridge::{Ridge, LAMBDA_GRID};
    use crate::testing::lcg;

    /// A problem with strongly correlated features: `x[j] = z[j % k] + noise·ε`.
    fn correlated(d: usize, m: usize, k: usize, noise: f32) -> Ridge {
        let mut s = 21u64;
        let mut r = Ridge::new(d, m, true);
        for i in 0..(3 * d) {
            let z: Vec<f32> = (0..k).map(|_| lcg(&mut s)).collect();
            let x: Vec<f32> = (0..d).map(|j| z[j % k] + noise * lcg(&mut s)).collect();
            let y: Vec<f32> = (0..m)
                .map(|j| x[j % d] - 0.5 * x[(j + 3) % d] + 0.1 * lcg(&mut s))
                .collect();
            r.add(&x, &y, i % 5 == 0);
        }
        r.finish();
        r
    }

    /// Largest difference of `a` from `b`, relative to `b`'s largest entry.
    fn relative_difference(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs())) / scale
    }

    /// A problem's training system at λ `l` solved three ways.
    struct Solves {
        /// by [`solve_normal`]
        got: Array2<f64>,
        /// in f64
        want: Array2<f64>,
        /// by the f32 factor alone, unrefined
        once: Array2<f64>,
    }

    impl Solves {
        fn of(r: &Ridge, d: usize, l: f64) -> Solves {
            let extra = ridge_diagonal(&r.train.g, d, l);
            let want = solve_normal_f64(&r.train.g, &r.train.c, &extra)
                .unwrap()
                .mapv(f64::from);
            let mut scratch = Array2::zeros(r.train.g.raw_dim());
            let got = solve_normal(&r.train.g, &r.train.c, d, l, &mut scratch)
                .unwrap()
                .mapv(f64::from);
            let once = cholesky_solve(&scratch, r.train.c.clone())
                .unwrap()
                .mapv(f64::from);
            Solves { got, want, once }
        }
    }

    #[test]
    fn the_f32_factor_refined_gives_the_f64_solution() {
        // Strongly correlated features with a λ far below the grid's, 700 columns (two
        // chunks): the f32 factor alone is off by more than REFINED (~4e-2), so the solve
        // refines, to well within REFINED (~2e-3).
        let (d, m) = (200, 700);
        let r = correlated(d, m, 20, 0.003);
        let Solves { got, want, once } = Solves::of(&r, d, 1e-5 * r.lambda_unit());
        let (refined, coarse) = (
            relative_difference(&got, &want),
            relative_difference(&once, &want),
        );
        assert!(
            coarse > REFINED,
            "f32 alone {coarse:e}, refined {refined:e}"
        );
        assert!(
            refined < REFINED && refined < coarse / 10.0,
            "refined {refined:e}, f32 alone {coarse:e}"
        );
    }

    #[test]
    fn a_well_conditioned_system_keeps_the_f32_answer() {
        // Condition ~1e2: the f32 factor's answer is within REFINED of f64's and is kept as is.
        let (d, m) = (120, 40);
        let r = correlated(d, m, 120, 0.3);
        let Solves { got, want, once } = Solves::of(&r, d, LAMBDA_GRID[2] * r.lambda_unit());
        assert_eq!(got, once, "a refinement step was taken");
        let diff = relative_difference(&got, &want);
        assert!(diff < REFINED, "difference {diff:e}");
    }

    #[test]
    fn a_system_too_ill_conditioned_for_f32_is_solved_in_f64() {
        // Near-duplicate features and almost no ridge (condition ~3e7): f32 cannot factor or
        // refine this, f64 can.
        let (d, m) = (240, 10);
        let r = correlated(d, m, 2, 1e-3);
        let l = 3e-6 * r.lambda_unit();
        let extra = ridge_diagonal(&r.train.g, d, l);
        let want = solve_normal_f64(&r.train.g, &r.train.c, &extra).unwrap();
        let mut scratch = Array2::zeros(r.train.g.raw_dim());
        let got = solve_normal(&r.train.g, &r.train.c, d, l, &mut scratch).unwrap();
        let diff = relative_difference(&got.mapv(f64::from), &want.mapv(f64::from));
        assert!(diff < 1e-9, "difference {diff:e}");
        // The f32 route alone does not get there: the answer is the fallback's.
        let f32_route = factor_f32(&r.train.g, &extra, &mut scratch)
            && refined(&r.train.g, &scratch, &extra, r.train.c.mapv(f64::from))
                .unwrap()
                .is_some();
        assert!(!f32_route, "f32 solved a system of condition ~3e7");
    }
}
