//! What the fitting modes share: the progress callback, one layer's solve, rows cut out of a
//! capture, and what a fit hands back.

use anyhow::Result;

use super::method::{self, Rows, Weights};
use super::options::PatchOptions;
use super::report::LayerReport;
use super::ridge::Ridge;
use crate::capture::{Capture, Matrix};
use crate::store::{Delta, TensorReport};

/// Progress callback: (phase, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// What a fit produced: deltas still to be scaled and stored, or the stored edits already
/// (sequential `down` stores each layer as it goes, so the deltas never pile up in memory).
pub enum Fitted {
    /// deltas still to be scaled and stored
    Deltas(Vec<Delta>),
    /// stored edits and their reports
    Stored(gguf::Edits, Vec<TensorReport>),
}

/// Solve layer `l`'s problem (λ's search starting at `lambda_start`, see [`Ridge::solve_from`])
/// and turn the solution into its deltas.
pub fn solve_layer(
    opts: &PatchOptions,
    l: usize,
    prob: &mut Ridge,
    weights: &dyn Weights,
    lambda_start: Option<f64>,
) -> Result<(Vec<Delta>, LayerReport)> {
    let importance = prob.feature_power();
    let sol = prob.solve_from(opts.lambda, lambda_start)?;
    // After the solve, whose factorisations are the larger working set.
    let grams = prob.grams();
    let d = method::deltas(
        opts.method,
        l,
        &sol,
        importance,
        grams,
        opts.output_rounding,
        weights,
    )?;
    Ok((
        d,
        LayerReport {
            layer: l,
            lambda: Some(sol.lambda),
            val_rel_error: sol.val_rel_error.is_finite().then_some(sol.val_rel_error),
            alpha: None,
        },
    ))
}

/// The rows `[start, start+len)` of every captured matrix.
pub fn slice_rows(c: Capture, start: usize, len: usize) -> Rows {
    slice_rows_of(c.tensors, start, len)
}

/// The rows `[start, start+len)` of every matrix in `rows`.
pub fn slice_rows_of(rows: Rows, start: usize, len: usize) -> Rows {
    rows.into_iter()
        .map(|(k, m)| {
            let data = m.data[start * m.cols..(start + len) * m.cols].to_vec();
            (
                k,
                Matrix {
                    rows: len,
                    cols: m.cols,
                    data,
                },
            )
        })
        .collect()
}
