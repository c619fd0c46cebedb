//! Sequential fitting (Algorithm 1 of the thought-matrix paper): layer l is fitted on the
//! unprompted activations recomputed with layers < l already patched, with the whole remaining
//! difference to the prompted run as its target.
//!
//! The prompted run never changes: it is captured once for every layer and spilled to disk.
//! Every method edits only tensors of the layer it fits, so the unprompted run needs no
//! re-run of the layers before: the residual stream entering layer l is kept for every
//! calibration token, and layer l, cut out into a file of its own ([`super::slice`]), runs on
//! it once unpatched (the activations the fit needs) and once patched, as stored (the stream
//! entering layer l+1). Two one-layer passes per layer instead of `L²/2` layer passes.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::Instant;

use super::{edit, method, slice, slice_rows, solve_layer, spill::Spill};
use super::{is_validation, Arch, Fitted, LayerReport, PatchOptions, Progress, Rows};
use crate::capture::{self, Kind, Matrix, Request};
use crate::engine::{Context, ContextOptions, Model};
use crate::material::Pair;

/// Name prefix of the working directory (beside the output).
const WORK_PREFIX: &str = ".gguf-sleep-seq-";

/// Fit `layers` in order; returns every layer's deltas and reports.
#[allow(clippy::too_many_arguments)]
pub(super) fn fit(
    src: &gguf::GgufFile,
    input: &Path,
    work_dir: &Path,
    copts: &ContextOptions,
    arch: &Arch,
    pairs: &[Pair],
    layers: &[usize],
    opts: &PatchOptions,
    weights: &dyn method::Weights,
    phases: &mut Vec<(String, f64)>,
    progress: Progress,
) -> Result<(Fitted, Vec<LayerReport>)> {
    // `.gguf-sleep-seq-PID-…`: what a killed run left behind is removed by the next one.
    gguf::remove_stale(work_dir, WORK_PREFIX);
    let work = tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
        .tempdir_in(work_dir)
        .with_context(|| {
            format!(
                "cannot create a working directory in {}",
                work_dir.display()
            )
        })?;
    let t = Instant::now();
    let (pk, _) = method::kinds(opts.method, arch);
    let teacher = opts.teacher_lora.as_deref();
    let prompted = capture_prompted(
        input,
        teacher,
        copts,
        pairs,
        layers,
        &pk,
        work.path(),
        progress,
    )?;
    phases.push(("capture prompted".to_string(), t.elapsed().as_secs_f64()));
    let run = Run {
        src,
        input,
        work: work.path(),
        copts,
        arch,
        pairs,
        opts,
        weights,
        prompted: &prompted,
    };
    run.by_layer(layers, phases, progress)
}

/// The prompted run's rows of `kinds` at every layer, aligned, spilled into `work`; with a
/// `teacher` adapter, the run of the model with that adapter applied (the pairs then hold the
/// same tokens twice, see [`super::PatchOptions::teacher_lora`]).
#[allow(clippy::too_many_arguments)]
fn capture_prompted(
    input: &Path,
    teacher: Option<&Path>,
    copts: &ContextOptions,
    pairs: &[Pair],
    layers: &[usize],
    kinds: &[Kind],
    work: &Path,
    progress: Progress,
) -> Result<Spill> {
    let model = Model::load(input)?;
    let mut req = Request::new(kinds, layers.iter().copied());
    req.stop_early = true;
    let dir = work.join("prompted");
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut spill = Spill::new(&dir);
    let adapter = teacher.map(|p| model.load_lora(p)).transpose()?;
    let mut ctx = Context::new(&model, copts)?;
    if let Some(a) = &adapter {
        ctx.set_lora(a, 1.0)?;
    }
    for (i, p) in pairs.iter().enumerate() {
        spill.push(&slice_rows(
            capture::run(&mut ctx, &p.prompted, &req)?,
            p.align.prompted_start,
            p.align.len,
        ))?;
        progress("prompted", i + 1, pairs.len());
    }
    spill.finish()?;
    Ok(spill)
}

/// What every layer's fit shares.
struct Run<'a> {
    src: &'a gguf::GgufFile,
    input: &'a Path,
    work: &'a Path,
    copts: &'a ContextOptions,
    arch: &'a Arch,
    pairs: &'a [Pair],
    opts: &'a PatchOptions,
    weights: &'a dyn method::Weights,
    prompted: &'a Spill,
}

impl Run<'_> {
    /// Add conversation `i`'s unprompted rows `u` (all tokens) of layer `l` to `prob`.
    fn add(
        &self,
        prob: &mut super::ridge::Ridge,
        targets: &[Rows],
        i: usize,
        l: usize,
        u: Rows,
    ) -> Result<()> {
        let p = &self.pairs[i];
        if self.opts.method == method::Method::Matrix {
            // Tokens before the shared part (the template's own text) keep their MLP input:
            // `Δ` applies to every token, not only to the fitted ones (docs/RESULTS.md).
            if let Some(a) = u.get(&(crate::capture::Kind::MlpIn, l)) {
                let zero = vec![0f32; a.cols];
                for r in 0..p.align.unprompted_start.min(a.rows) {
                    prob.add(a.row(r), &zero, is_validation(i));
                }
            }
        }
        let u = slice_rows_of(u, p.align.unprompted_start, p.align.len);
        method::add_rows(
            self.opts.method,
            self.arch,
            l,
            &targets[i],
            &u,
            false,
            prob,
            is_validation(i),
        )
    }

    /// Each layer fitted, then run alone on the kept residual stream.
    fn by_layer(
        &self,
        layers: &[usize],
        phases: &mut Vec<(String, f64)>,
        progress: Progress,
    ) -> Result<(Fitted, Vec<LayerReport>)> {
        let (_, uk) = method::kinds(self.opts.method, self.arch);
        let layer_file = self.work.join("layer.gguf");
        // The residual stream entering the layer being fitted, per conversation, every token.
        let mut stream: Vec<Matrix> = Vec::new();
        let (mut t_capture, mut t_solve, mut t_update) = (0.0, 0.0, 0.0);
        let (mut stored, mut stored_reports) = (gguf::Edits::new(), Vec::new());
        let mut reports = Vec::new();
        for (n, &l) in layers.iter().enumerate() {
            let t = Instant::now();
            let targets = self.prompted.layer(l)?;
            let mut prob = method::problem(self.opts.method, self.arch);
            {
                // The first layer runs in the full model from the tokens; later ones alone.
                let (model, local) = if n == 0 {
                    (Model::load(self.input)?, l)
                } else {
                    slice::write_layer(self.src, l, &gguf::Edits::new(), &layer_file)?;
                    (Model::load(&layer_file)?, 0)
                };
                let mut req = Request::new(&uk, [local]);
                req.stop_early = true;
                let mut ctx = Context::new(&model, self.copts)?;
                for (i, p) in self.pairs.iter().enumerate() {
                    let c = if n == 0 {
                        capture::run(&mut ctx, &p.unprompted, &req)?
                    } else {
                        capture::run_embeddings(&mut ctx, &stream[i], &req)?
                    };
                    let rows: Rows = c
                        .tensors
                        .into_iter()
                        .map(|((k, _), m)| ((k, l), m))
                        .collect();
                    self.add(&mut prob, &targets, i, l, rows)?;
                }
            }
            t_capture += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (d, r) = solve_layer(self.opts, l, &mut prob, self.weights)?;
            drop(prob); // the normal equations; the edits carry the Grams they need
            reports.push(r);
            t_solve += t.elapsed().as_secs_f64();
            // The output's edits of this layer, at the asked strength.
            let t = Instant::now();
            let (out, r) =
                edit::to_gguf_edits(self.src, &d, self.opts.strength, self.opts.edit_type)?;
            stored_reports.extend(r);
            if n + 1 < layers.len() {
                // The stream leaving the patched layer, as stored (requantized), enters l+1.
                let edits = if self.opts.strength == 1.0 {
                    out.clone()
                } else {
                    edit::to_gguf_edits(self.src, &d, 1.0, self.opts.edit_type)?.0
                };
                let next = if n == 0 {
                    let full = self.work.join("first.gguf");
                    gguf::write(self.src, &edits, &full, &slice::scratch())?;
                    let model = Model::load(&full)?;
                    let out = self.block_outputs(&model, l, None)?;
                    drop(model);
                    std::fs::remove_file(&full).ok();
                    out
                } else {
                    slice::write_layer(self.src, l, &edits, &layer_file)?;
                    let model = Model::load(&layer_file)?;
                    self.block_outputs(&model, 0, Some(&stream))?
                };
                stream = next;
            }
            t_update += t.elapsed().as_secs_f64();
            stored.extend(out);
            progress("layers", n + 1, layers.len());
        }
        phases.push(("capture unprompted".to_string(), t_capture));
        phases.push(("solve".to_string(), t_solve));
        phases.push(("requantize+advance".to_string(), t_update));
        Ok((Fitted::Stored(stored, stored_reports), reports))
    }

    /// Every conversation's output of layer `layer` of `model` (all tokens), from the tokens
    /// or from input embeddings.
    fn block_outputs(
        &self,
        model: &Model,
        layer: usize,
        input: Option<&[Matrix]>,
    ) -> Result<Vec<Matrix>> {
        let mut req = Request::new(&[Kind::BlockOut], [layer]);
        req.stop_early = true;
        let mut ctx = Context::new(model, self.copts)?;
        let mut out = Vec::with_capacity(self.pairs.len());
        for (i, p) in self.pairs.iter().enumerate() {
            let mut c = match input {
                None => capture::run(&mut ctx, &p.unprompted, &req)?,
                Some(x) => capture::run_embeddings(&mut ctx, &x[i], &req)?,
            };
            out.push(
                c.tensors
                    .remove(&(Kind::BlockOut, layer))
                    .context("llama.cpp returned no block output")?,
            );
        }
        Ok(out)
    }
}

/// The rows `[start, start+len)` of every matrix in `rows`.
fn slice_rows_of(rows: Rows, start: usize, len: usize) -> Rows {
    slice_rows(
        capture::Capture {
            tensors: rows,
            ..Default::default()
        },
        start,
        len,
    )
}
