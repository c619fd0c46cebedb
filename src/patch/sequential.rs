//! Sequential fitting (Algorithm 1 of the thought-matrix paper): layer l is fitted on the
//! unprompted activations recomputed with layers < l already patched, with the whole remaining
//! difference to the prompted run as its target.
//!
//! The prompted run never changes: it is captured once for every layer and spilled to disk.
//! Every method edits only tensors of the layer it fits, so the unprompted run needs no
//! re-run of the layers before: the residual stream entering layer l is kept for every
//! calibration token (at the first layer fitted, the tokens' embeddings or the output of the
//! layer before it), and layer l, cut out into a file of its own ([`super::slice`]), runs on
//! it once unpatched (the activations the fit needs) and once patched, as stored (the stream
//! entering layer l+1). Two one-layer passes per layer instead of `L²/2` layer passes, and no
//! copy of the whole model on disk. Where the edit's effect on the stream has a closed form
//! ([`super::advance`]: `down` on a family without a norm after the MLP), the second pass is
//! that arithmetic instead. Each layer's prompted rows leave the disk once read.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::Instant;

use super::advance;
use super::facts::Arch;
use super::fit::{slice_rows, slice_rows_of, solve_layer, Fitted, Progress};
use super::method::{self, Rows, Weights};
use super::options::PatchOptions;
use super::report::LayerReport;
use super::ridge::Ridge;
use super::slice;
use super::spill::Spill;
use crate::capture::{self, Kind, Matrix, Request};
use crate::engine::{Context, ContextOptions, Model};
use crate::material::Pair;
use crate::store::{self, output};

/// What every layer's fit shares.
pub struct Run<'a> {
    /// the input model's file
    pub src: &'a gguf::GgufFile,
    /// its path (llama.cpp loads it)
    pub input: &'a Path,
    /// context settings for every capture
    pub copts: &'a ContextOptions,
    /// what the fits need of the model
    pub arch: &'a Arch,
    /// the calibration exchanges
    pub pairs: &'a [Pair],
    /// the run's options
    pub opts: &'a PatchOptions,
    /// fit to this adapter's activations instead of the prompted run's (see
    /// [`super::Supplied::teacher_lora`])
    pub teacher: Option<&'a Path>,
    /// the weights edits are made to
    pub weights: &'a dyn Weights,
}

impl Run<'_> {
    /// Fit `layers` in order, working in a scratch directory in `work_dir`; returns every
    /// layer's stored edits and reports.
    pub fn fit(
        &self,
        work_dir: &Path,
        layers: &[usize],
        phases: &mut Vec<(String, f64)>,
        progress: Progress,
    ) -> Result<(Fitted, Vec<LayerReport>)> {
        let work = output::scratch_dir(work_dir, output::Scratch::Seq)?;
        // Memory is the limit at size: each layer's large buffers go back when freed.
        crate::engine::return_freed_memory();
        let t = Instant::now();
        let (pk, _) = method::kinds(self.opts.method, self.arch);
        let mut prompted = capture_prompted(
            self.input,
            self.teacher,
            self.copts,
            self.pairs,
            layers,
            &pk,
            work.path(),
            progress,
        )?;
        phases.push(("capture prompted".to_string(), t.elapsed().as_secs_f64()));
        let mut by = ByLayer {
            run: self,
            work: work.path(),
            prompted: &mut prompted,
        };
        by.fit(layers, phases, progress)
    }
}

/// The prompted run's rows of `kinds` at every layer, aligned, spilled into `work`; with a
/// `teacher` adapter, the run of the model with that adapter applied (the pairs then hold the
/// same tokens twice, see [`super::Supplied::teacher_lora`]).
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
    let mut shared = capture::Shared::default();
    for (i, p) in pairs.iter().enumerate() {
        spill.push(&slice_rows(
            shared.run(&mut ctx, &p.prompted, p.align.prompted_start, &req)?,
            0,
            p.align.len,
        ))?;
        progress("prompted", i + 1, pairs.len());
    }
    spill.finish()?;
    Ok(spill)
}

/// One sequential fit in progress: the run, its scratch directory, the prompted rows.
struct ByLayer<'a> {
    run: &'a Run<'a>,
    work: &'a Path,
    prompted: &'a mut Spill,
}

impl ByLayer<'_> {
    /// Add conversation `i`'s unprompted rows `u` (all tokens) of layer `l` to `prob`.
    fn add(&self, prob: &mut Ridge, targets: &[Rows], i: usize, l: usize, u: Rows) -> Result<()> {
        let p = &self.run.pairs[i];
        if self.run.opts.method == method::Method::Matrix {
            // Tokens before the shared part (the template's own text) keep their MLP input:
            // `Δ` applies to every token, not only to the fitted ones (docs/RESULTS.md).
            if let Some(a) = u.get(&(Kind::MlpIn, l)) {
                let zero = vec![0f32; a.cols];
                for r in 0..p.align.unprompted_start.min(a.rows) {
                    prob.add(a.row(r), &zero, p.validation);
                }
            }
        }
        let u = slice_rows_of(u, p.align.unprompted_start, p.align.len);
        method::add_rows(
            self.run.opts.method,
            self.run.arch,
            l,
            &targets[i],
            &u,
            false,
            &p.row_weights(self.run.opts.content_weight),
            prob,
            p.validation,
        )
    }

    /// Each layer fitted, then run alone on the kept residual stream.
    fn fit(
        &mut self,
        layers: &[usize],
        phases: &mut Vec<(String, f64)>,
        progress: Progress,
    ) -> Result<(Fitted, Vec<LayerReport>)> {
        let (_, uk) = method::kinds(self.run.opts.method, self.run.arch);
        let closed_form = advance::applies(self.run.opts.method, self.run.arch);
        let layer_file = self.work.join("layer.gguf");
        // The residual stream entering the layer being fitted, per conversation, every token.
        let mut stream = self.first_inputs(layers[0])?;
        let (mut t_capture, mut t_solve, mut t_update) = (0.0, 0.0, 0.0);
        let (mut stored, mut stored_reports) = (gguf::Edits::new(), Vec::new());
        let mut reports = Vec::new();
        for (n, &l) in layers.iter().enumerate() {
            let t = Instant::now();
            let mut prob = method::problem(self.run.opts.method, self.run.arch);
            // With the closed-form advance, every token's `ffn_down` inputs, kept to the end of
            // the layer, and the stream already the unpatched layer's output.
            let mut inputs = (closed_form && n + 1 < layers.len())
                .then(|| advance::Inputs::create(&self.work.join("mlp-inputs")))
                .transpose()?;
            {
                // The prompted rows are in `prob` once added: not held through the solve.
                let targets = self.prompted.take_layer(l)?;
                slice::write_layer(self.run.src, l, &gguf::Edits::new(), &layer_file)?;
                let model = Model::load(&layer_file)?;
                let mut req = Request::new(&uk, [0]);
                req.stop_early = true;
                let mut ctx = Context::new(&model, self.run.copts)?;
                for (i, x) in stream.iter_mut().enumerate() {
                    let rows: Rows = capture::run_embeddings(&mut ctx, x, &req)?
                        .tensors
                        .into_iter()
                        .map(|((k, _), m)| ((k, l), m))
                        .collect();
                    if let Some(inputs) = &mut inputs {
                        let (Some(h), Some(o)) = (
                            rows.get(&(Kind::MlpHidden, l)),
                            rows.get(&(Kind::BlockOut, l)),
                        ) else {
                            anyhow::bail!("llama.cpp returned no MLP input or block output");
                        };
                        inputs.push(h)?;
                        *x = o.clone();
                    }
                    self.add(&mut prob, &targets, i, l, rows)?;
                }
            }
            t_capture += t.elapsed().as_secs_f64();
            let t = Instant::now();
            // λ's search starts where the layer before ended.
            let start = reports.last().and_then(|r: &LayerReport| r.lambda);
            let (d, r) = solve_layer(self.run.opts, l, &mut prob, self.run.weights, start)?;
            drop(prob); // the normal equations; the edits carry the Grams they need
            reports.push(r);
            t_solve += t.elapsed().as_secs_f64();
            // The output's edits of this layer, at the asked strength.
            let t = Instant::now();
            let (out, r) = store::to_gguf_edits(
                self.run.src,
                &d,
                self.run.opts.strength,
                self.run.opts.edit_type,
            )?;
            stored_reports.extend(r);
            if n + 1 < layers.len() {
                // The stream leaving the patched layer, as stored (requantized), enters l+1.
                let full;
                let edits = if self.run.opts.strength == 1.0 {
                    &out
                } else {
                    full = store::to_gguf_edits(self.run.src, &d, 1.0, self.run.opts.edit_type)?.0;
                    &full
                };
                if let Some(inputs) = inputs.take() {
                    let change = advance::StoredChange::of(self.run.src, edits, l)?;
                    inputs.advance(&change, &mut stream)?;
                } else {
                    slice::write_layer(self.run.src, l, edits, &layer_file)?;
                    let model = Model::load(&layer_file)?;
                    self.block_outputs(&model, 0, Some(&mut stream))?;
                }
            }
            t_update += t.elapsed().as_secs_f64();
            // The input's pages this layer read (its weights, the slice's shared tensors) are
            // read again only by the next slice: out of the resident set until then.
            self.run.src.release_pages();
            stored.extend(out);
            progress("layers", n + 1, layers.len());
        }
        phases.push(("capture unprompted".to_string(), t_capture));
        phases.push(("solve".to_string(), t_solve));
        phases.push(("requantize+advance".to_string(), t_update));
        Ok((Fitted::Stored(stored, stored_reports), reports))
    }

    /// The residual stream entering layer `l` for every conversation (all tokens): the tokens'
    /// embeddings for layer 0, else the full model's output of layer `l − 1`.
    fn first_inputs(&self, l: usize) -> Result<Vec<Matrix>> {
        if l == 0 {
            let scale = self.run.arch.embed_scale;
            return self
                .run
                .pairs
                .iter()
                .map(|p| slice::token_embeddings(self.run.src, &p.unprompted, scale))
                .collect();
        }
        self.block_outputs(&Model::load(self.run.input)?, l - 1, None)
    }

    /// Every conversation's output of layer `layer` of `model` (all tokens): from the tokens,
    /// or with `stream` given, from it as input embeddings, each conversation's input replaced
    /// by its output as it is computed (one stream is held, not two).
    fn block_outputs(
        &self,
        model: &Model,
        layer: usize,
        mut stream: Option<&mut Vec<Matrix>>,
    ) -> Result<Vec<Matrix>> {
        let mut req = Request::new(&[Kind::BlockOut], [layer]);
        req.stop_early = true;
        let mut ctx = Context::new(model, self.run.copts)?;
        let mut out = Vec::new();
        for (i, p) in self.run.pairs.iter().enumerate() {
            let mut c = match stream.as_deref() {
                None => capture::run(&mut ctx, &p.unprompted, &req)?,
                Some(x) => capture::run_embeddings(&mut ctx, &x[i], &req)?,
            };
            let o = c
                .tensors
                .remove(&(Kind::BlockOut, layer))
                .context("llama.cpp returned no block output")?;
            match stream.as_deref_mut() {
                None => out.push(o),
                Some(x) => x[i] = o,
            }
        }
        Ok(out)
    }
}
