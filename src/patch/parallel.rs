//! Parallel fitting: every layer fitted in one pass on the unpatched model (faster than the
//! sequential mode, less faithful: the layers' corrections add up and overshoot). A
//! residual-stream target is then the layer's own increment, so the layer before each fitted
//! one is captured too.

use anyhow::Result;
use rayon::prelude::*;
use std::time::Instant;

use super::facts::Arch;
use super::fit::{slice_rows, solve_layer, Fitted, Progress};
use super::method::{self, Weights};
use super::options::PatchOptions;
use super::report::LayerReport;
use super::ridge::Ridge;
use crate::capture::{self, Request};
use crate::engine::{Context, ContextOptions, Model};
use crate::material::Pair;
use crate::store::{self, Delta};

/// Layers to capture for fitting `layers`: they and the one before (its output is what each
/// layer's increment is measured from).
fn capture_layers(layers: &[usize]) -> Vec<usize> {
    let mut v = layers.to_vec();
    if layers[0] > 0 {
        v.insert(0, layers[0] - 1);
    }
    v
}

/// Fit `layers` in one capture pass over `pairs`; each layer is stored as soon as it is solved.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &Model,
    src: &gguf::GgufFile,
    copts: &ContextOptions,
    arch: &Arch,
    pairs: &[Pair],
    layers: &[usize],
    opts: &PatchOptions,
    weights: &dyn Weights,
    phases: &mut Vec<(String, f64)>,
    progress: Progress,
) -> Result<(Fitted, Vec<LayerReport>)> {
    // Each capture and each solve allocates and frees the same large buffers; keeping freed
    // memory spares the kernel re-zeroing their pages (parallel mode only: it raises the
    // sequential mode's peak RSS over its goal).
    crate::engine::retain_freed_memory();
    let t = Instant::now();
    let (pk, uk) = method::kinds(opts.method, arch);
    let cl = capture_layers(layers);
    let mut preq = Request::new(&pk, cl.iter().copied());
    let mut ureq = Request::new(&uk, cl.iter().copied());
    (preq.stop_early, ureq.stop_early) = (true, true);
    let mut problems: Vec<Ridge> = layers
        .iter()
        .map(|_| method::problem(opts.method, arch))
        .collect();
    // The prompted runs keep their shared system prompt cached in a context of their own.
    let (mut ctx, mut pctx) = (Context::new(model, copts)?, Context::new(model, copts)?);
    let mut shared = capture::Shared::default();
    for (i, p) in pairs.iter().enumerate() {
        let pr = slice_rows(
            shared.run(&mut pctx, &p.prompted, p.align.prompted_start, &preq)?,
            0,
            p.align.len,
        );
        let ur = slice_rows(
            capture::run(&mut ctx, &p.unprompted, &ureq)?,
            p.align.unprompted_start,
            p.align.len,
        );
        let w = p.row_weights(opts.content_weight);
        for (prob, &l) in problems.iter_mut().zip(layers) {
            method::add_rows(opts.method, arch, l, &pr, &ur, true, &w, prob, p.validation)?;
        }
        progress("capture", i + 1, pairs.len());
    }
    phases.push(("capture".to_string(), t.elapsed().as_secs_f64()));
    let (mut t_solve, mut t_store) = (0.0, 0.0);
    let (mut stored, mut tensors) = (gguf::Edits::new(), Vec::new());
    let mut reports = Vec::new();
    // Each problem is dropped once solved and each layer stored at once: the normal equations
    // and the inputs' Grams are the largest things held. As many layers as there are threads
    // are solved at once, each with single-threaded LAPACK, then stored in order.
    let mut todo: Vec<(Ridge, usize)> = problems.into_iter().zip(layers.iter().copied()).collect();
    let at_once = rayon::current_num_threads().max(1);
    while !todo.is_empty() {
        let batch: Vec<(Ridge, usize)> = todo.drain(..at_once.min(todo.len())).collect();
        let t = Instant::now();
        let solved: Vec<Result<(Vec<Delta>, LayerReport)>> =
            crate::engine::with_single_threaded_lapack(|| {
                batch
                    .into_par_iter()
                    .map(|(mut prob, l)| solve_layer(opts, l, &mut prob, weights, None))
                    .collect()
            });
        t_solve += t.elapsed().as_secs_f64();
        for s in solved {
            let (d, r) = s?;
            reports.push(r);
            let t = Instant::now();
            let (e, r) = store::to_gguf_edits(src, &d, opts.strength, opts.edit_type)?;
            stored.extend(e);
            tensors.extend(r);
            t_store += t.elapsed().as_secs_f64();
            progress("solve", reports.len(), layers.len());
        }
    }
    phases.push(("solve".to_string(), t_solve));
    phases.push(("requantize".to_string(), t_store));
    Ok((Fitted::Stored(stored, tensors), reports))
}
