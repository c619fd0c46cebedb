//! `patch`: bake a system prompt into a model's weights without training.
//!
//! The flow: the prompted model answers the calibration questions (teacher-forced material);
//! each exchange runs with and without the prompt, capturing per-layer activations at the
//! aligned tokens (user turn and reply); a method turns the differences into tensor edits
//! (biases, matrix deltas); the edits are scaled, requantized with ggml's codec and written
//! with `sleep.*` provenance into a new GGUF.

pub mod edit;
pub mod method;
pub mod ridge;
pub mod rounding;
mod sequential;
pub mod sleep;
pub mod slice;
mod spill;
#[cfg(test)]
mod testing;
mod weights;

use anyhow::{bail, Context as _, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::capture::{self, Kind, Matrix, Request};
use crate::chat::ChatFormat;
use crate::convo::prompt_tokens;
use crate::engine::{Context, ContextOptions, Model};
use crate::generate::GenOptions;
use crate::material::{self, Pair};
pub use edit::{Delta, EditType, TensorReport};
pub use method::{Arch, Method, Rows};
pub use ridge::Lambda;
use weights::FileWeights;

/// Settings of one `patch` run.
#[derive(Debug, Clone)]
pub struct PatchOptions {
    /// the method
    pub method: Method,
    /// fit layer by layer on activations recomputed with the earlier layers patched
    pub sequential: bool,
    /// scale of every edit (0 = identity)
    pub strength: f32,
    /// layers to edit, `[start, end)`; all when `None`
    pub layers: Option<(usize, usize)>,
    /// calibration questions
    pub questions: Vec<String>,
    /// ridge λ
    pub lambda: Lambda,
    /// storage type of edited weight matrices
    pub edit_type: EditType,
    /// round edited matrices to keep each layer's output on the calibration inputs
    /// ([`rounding`]) instead of each weight to its nearest grid value
    pub output_rounding: bool,
    /// sleep: α override (measured per layer and head otherwise)
    pub alpha: Option<f64>,
    /// sleep: β
    pub beta: f64,
    /// reply tokens generated per calibration question
    pub max_tokens: usize,
    /// write over the input model
    pub in_place: bool,
    /// also time a plain prefill of the calibration tokens (the lower bound of capture)
    pub measure_prefill: bool,
    /// what to write: the merged model, or an adapter llama.cpp applies at run time
    pub emit: Emit,
    /// `down`: also fit `ffn_down.bias` where the architecture applies one (off for LoRA)
    pub bias: bool,
    /// the prompted model's replies to the questions, one each, when already at hand (`bake`'s
    /// sampled trajectories): no replies are generated
    pub replies: Option<Vec<Vec<i32>>>,
    /// fit to this LoRA adapter instead of to the prompt (sequential only): the targets are the
    /// activations of the model with the adapter applied and no system prompt, on the same
    /// tokens as the unprompted run (`bake` stores a trained adapter in the file's own types so)
    pub teacher_lora: Option<PathBuf>,
    /// provenance recorded on top of the patch's own, in the same write (`bake --merge refit`)
    pub then: Option<Provenance>,
}

/// What a later stage records of itself over a patch's own provenance: one more line in
/// `sleep.history` and `sleep.*` keys that replace the patch's.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// the line for `sleep.history`
    pub history: String,
    /// keys to set, each replacing the patch's own
    pub keys: gguf::Metadata,
}

impl Provenance {
    /// Record it in `edits` of a file whose source header is `src` (history: the source's lines,
    /// then `before`, then this one).
    pub fn apply(&self, edits: &mut gguf::Edits, src: &gguf::Header, before: Option<String>) {
        push_history(edits, src, before.into_iter().chain([self.history.clone()]));
        for (k, v) in &self.keys {
            edits.set_metadata(k, v.clone());
        }
    }
}

/// What `patch` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// the patched model, edits merged into its weights
    Merged,
    /// a LoRA adapter of the weight changes (`down`, `matrix`), at most this rank
    Lora(usize),
    /// a control vector (`cvec`)
    Cvec,
}

/// Per-layer outcome of a fit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// layer index
    pub layer: usize,
    /// chosen ridge λ (relative to tr(G)/d); sleep: none
    pub lambda: Option<f64>,
    /// validation error relative to leaving the difference uncorrected
    pub val_rel_error: Option<f64>,
    /// sleep: measured α per KV head
    pub alpha: Option<Vec<f64>>,
}

/// What a `patch` run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchReport {
    /// method name
    pub method: String,
    /// "parallel" or "sequential"
    pub mode: String,
    /// edit scale
    pub strength: f32,
    /// calibration questions
    pub questions: usize,
    /// aligned calibration tokens fitted (per layer)
    pub tokens: usize,
    /// per-layer fits
    pub layers: Vec<LayerReport>,
    /// per edited tensor
    pub tensors: Vec<TensorReport>,
    /// (phase, seconds)
    pub phases: Vec<(String, f64)>,
    /// output path
    pub output: PathBuf,
    /// output size in bytes
    pub bytes: u64,
    /// seconds of a plain prefill (no capture) of every prompted and unprompted calibration
    /// sequence, when measured
    pub prefill_s: Option<f64>,
    /// the adapter written instead of the merged model (`--emit lora|cvec`)
    pub export: Option<crate::export::ExportReport>,
}

/// What a fit produced: deltas still to be scaled and stored, or the stored edits already
/// (sequential `down` stores each layer as it goes, so the deltas never pile up in memory).
enum Fitted {
    Deltas(Vec<Delta>),
    Stored(gguf::Edits, Vec<TensorReport>),
}

/// Progress callback: (phase, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Patch `input` with `system` baked in and write the result to `output`.
pub fn patch(
    input: &Path,
    output: &Path,
    system: &str,
    opts: &PatchOptions,
    progress: Progress,
) -> Result<PatchReport> {
    if system.trim().is_empty() {
        bail!("the system prompt is empty");
    }
    if opts.questions.is_empty() {
        bail!("no calibration questions");
    }
    if opts.method == Method::Sleep && opts.sequential {
        bail!("sleep is a closed-form correction; --sequential applies to vector, matrix and down");
    }
    if !opts.in_place && same_file(input, output) {
        bail!(
            "the output {} is the input model: choose another -o, or pass --in-place",
            output.display()
        );
    }
    let exported;
    let opts = &match opts.emit {
        Emit::Merged => opts.clone(),
        Emit::Lora(_) => {
            if !matches!(opts.method, Method::Down | Method::Matrix) {
                bail!("--emit lora carries weight matrices: use --method down or matrix");
            }
            // The adapter reproduces the unquantized patch, without biases.
            PatchOptions {
                edit_type: EditType::F32,
                ..opts.clone()
            }
        }
        Emit::Cvec => {
            if opts.method != Method::Cvec {
                bail!("--emit cvec needs --method cvec (a vector at each block's output)");
            }
            opts.clone()
        }
    };
    if opts.emit != Emit::Merged && opts.in_place {
        bail!("--in-place writes a model: it does not go with --emit lora or cvec");
    }
    check_writable(output)?;
    let src = gguf::GgufFile::open(input)?;
    let arch_name = src
        .header()
        .architecture()
        .context("the model has no general.architecture")?
        .to_string();
    capture::node_name(&arch_name, Kind::BlockOut)?;
    let n_layer = src
        .header()
        .arch_u64("block_count")
        .context("the model has no block_count")? as usize;
    let mut arch = arch_of(&src, &arch_name, n_layer)?;
    arch.check(opts.method)?;
    if matches!(opts.emit, Emit::Lora(_)) || !opts.bias {
        if matches!(opts.method, Method::Vector | Method::Cvec) {
            bail!("--no-bias leaves {} nothing to fit", opts.method.name());
        }
        arch.has_out_biases = false; // a LoRA adapter has no place for a bias
    }
    let model = Model::load(input)?;
    let info = model.info().clone();
    let (l0, l1) = opts.layers.unwrap_or((0, info.n_layer));
    if l0 >= l1 || l1 > info.n_layer {
        bail!(
            "--layers {l0}..{l1} is outside the model's 0..{}",
            info.n_layer
        );
    }
    check_prompt_fits(&model, system)?;
    if opts.teacher_lora.is_some() && (!opts.sequential || opts.method == Method::Sleep) {
        bail!("fitting to an adapter needs a sequential fit of vector, matrix or down");
    }

    let mut phases = Vec::new();
    let t = Instant::now();
    let gen = GenOptions {
        max_tokens: opts.max_tokens,
        ..Default::default()
    };
    let n_q = opts.questions.len();
    let mut done = 0;
    let mut pairs = material::build(
        &model,
        system,
        &opts.questions,
        &gen,
        opts.replies.as_deref(),
        || {
            done += 1;
            progress("replies", done, n_q);
        },
    )?;
    if opts.teacher_lora.is_some() {
        // The teacher is the adapted model used as the patched one will be: no system prompt.
        for p in &mut pairs {
            p.prompted = p.unprompted.clone();
            p.align.prompted_start = p.align.unprompted_start;
        }
    }
    phases.push(("replies".to_string(), t.elapsed().as_secs_f64()));
    let tokens: usize = pairs.iter().map(|p| p.align.len).sum();
    let n_ctx = pairs
        .iter()
        .map(|p| p.prompted.len().max(p.unprompted.len()))
        .max()
        .unwrap_or(1)
        .next_multiple_of(256) as u32;
    let copts = ContextOptions {
        n_ctx,
        n_batch: n_ctx,
        n_seq_max: 1,
        capture: true,
    };
    let layers: Vec<usize> = (l0..l1).collect();
    let weights = FileWeights(&src);
    let prefill_s = if opts.measure_prefill {
        Some(time_prefill(&model, &copts, &pairs)?)
    } else {
        None
    };

    let (fitted, layer_reports) = if opts.method == Method::Sleep {
        let t = Instant::now();
        let (d, r) = fit_sleep(&model, &arch, &copts, &pairs, &layers, opts, progress)?;
        phases.push(("capture+fit".to_string(), t.elapsed().as_secs_f64()));
        (Fitted::Deltas(d), r)
    } else if !opts.sequential {
        fit_parallel(
            &model,
            &src,
            &copts,
            &arch,
            &pairs,
            &layers,
            opts,
            &weights,
            &mut phases,
            progress,
        )?
    } else {
        drop(model);
        let work_dir = parent_dir(output);
        sequential::fit(
            &src,
            input,
            work_dir,
            &copts,
            &arch,
            &pairs,
            &layers,
            opts,
            &weights,
            &mut phases,
            progress,
        )?
    };

    let (mut edits, tensors) = match fitted {
        Fitted::Deltas(d) => {
            let t = Instant::now();
            let stored = edit::to_gguf_edits(&src, &d, opts.strength, opts.edit_type)?;
            phases.push(("requantize".to_string(), t.elapsed().as_secs_f64()));
            stored
        }
        Fitted::Stored(e, r) => (e, r),
    };
    provenance(&mut edits, src.header(), system, opts, (l0, l1));
    let t = Instant::now();
    progress("write", 0, 1);
    let bytes = if opts.emit == Emit::Merged {
        exported = None;
        let wopts = gguf::WriteOptions {
            allow_overwrite_input: opts.in_place,
            ..Default::default()
        };
        gguf::write(&src, &edits, output, &wopts)?.bytes
    } else {
        // Merged and unquantized into a scratch file beside the output, then exported.
        let dir = parent_dir(output);
        gguf::remove_stale(dir, MERGED_PREFIX);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{MERGED_PREFIX}{}-", std::process::id()))
            .suffix(".gguf")
            .tempfile_in(dir)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
        gguf::write(&src, &edits, tmp.path(), &slice::scratch())?;
        let merged = gguf::GgufFile::open(tmp.path())?;
        let r = match opts.emit {
            Emit::Lora(rank) => crate::export::lora::write(&src, &merged, rank, output)?,
            _ => crate::export::cvec::write(&src, &merged, output)?,
        };
        exported = Some(r);
        std::fs::metadata(output).map(|m| m.len()).unwrap_or(0)
    };
    progress("write", 1, 1);
    phases.push(("write".to_string(), t.elapsed().as_secs_f64()));
    Ok(PatchReport {
        method: opts.method.name().to_string(),
        mode: if opts.sequential {
            "sequential"
        } else {
            "parallel"
        }
        .to_string(),
        strength: opts.strength,
        questions: n_q,
        tokens,
        layers: layer_reports,
        tensors,
        phases,
        output: output.to_path_buf(),
        bytes,
        prefill_s,
        export: exported,
    })
}

/// Seconds to decode every calibration sequence (both renderings) without capture.
fn time_prefill(model: &Model, copts: &ContextOptions, pairs: &[Pair]) -> Result<f64> {
    let opts = ContextOptions {
        capture: false,
        ..copts.clone()
    };
    let mut ctx = Context::new(model, &opts)?;
    let t = Instant::now();
    for p in pairs {
        for seq in [&p.prompted, &p.unprompted] {
            ctx.clear();
            let mut batch = crate::engine::Batch::new(seq.len());
            for (i, &tok) in seq.iter().enumerate() {
                batch.push(tok, i as i32, 0, i + 1 == seq.len());
            }
            ctx.decode(&batch)?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Whether two paths name the same file (the second may not exist yet).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}

/// Architecture facts from the file.
fn arch_of(src: &gguf::GgufFile, name: &str, n_layer: usize) -> Result<Arch> {
    capture::node_name(name, Kind::BlockOut)?;
    let h = src.header();
    let n_embd = h
        .arch_u64("embedding_length")
        .context("no embedding_length")? as usize;
    let n_ff = h
        .arch_u64("feed_forward_length")
        .context("the model has no feed_forward_length")? as usize;
    let mut ffn_post_norm = Vec::new();
    if name == "gemma3" {
        for l in 0..n_layer {
            let t = format!("blk.{l}.post_ffw_norm.weight");
            let info = h
                .tensor(&t)
                .with_context(|| format!("gemma3 model without {t}"))?;
            ffn_post_norm.push(crate::engine::dequantize(
                info.ggml_type,
                src.tensor_data(info),
                info.n_elements(),
            )?);
        }
    }
    let n_head = h
        .arch_u64("attention.head_count")
        .context("no attention.head_count")?;
    let head_dim_v = h
        .arch_u64("attention.value_length")
        .unwrap_or(n_embd as u64 / n_head.max(1)) as usize;
    Ok(Arch {
        name: name.to_string(),
        head_dim_v,
        n_embd,
        n_ff,
        has_out_biases: applies_out_biases(name),
        ffn_post_norm,
    })
}

/// Whether llama.cpp's graph for architecture `name` adds `attn_output.bias` and
/// `ffn_down.bias` when a file has them (the llama family does; gemma3 does not).
pub fn applies_out_biases(name: &str) -> bool {
    matches!(name, "llama" | "mistral" | "granite")
}

/// A prompt that does not leave room for a conversation in the model's context is refused.
pub(crate) fn check_prompt_fits(model: &Model, system: &str) -> Result<()> {
    let fmt = ChatFormat::for_model(model)?;
    let n = prompt_tokens(model, &fmt, Some(system), "Hi")?.len();
    let n_ctx = model.info().n_ctx_train;
    if n + 64 > n_ctx {
        bail!(
            "the system prompt takes {n} tokens, which leaves no room in the model's {n_ctx}-token \
             context: shorten it"
        );
    }
    Ok(())
}

/// Name prefix of the merged scratch file an export is made from.
const MERGED_PREFIX: &str = ".gguf-sleep-merged-";

/// The directory a path is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fails early, before minutes of fitting, when the output's directory takes no new files.
pub(crate) fn check_writable(output: &Path) -> Result<()> {
    let dir = parent_dir(output);
    tempfile::Builder::new()
        .prefix(".gguf-sleep-probe-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| {
            format!(
                "cannot write to {}: choose an -o in a writable directory",
                dir.display()
            )
        })
}

fn is_validation(i: usize) -> bool {
    i % 5 == 4
}

/// The rows `[start, start+len)` of every captured matrix.
fn slice_rows(c: capture::Capture, start: usize, len: usize) -> Rows {
    c.tensors
        .into_iter()
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

/// Layers to capture for fitting `layers`: plus the one before in parallel mode (increments).
fn capture_layers(layers: &[usize], with_prev: bool) -> Vec<usize> {
    let mut v = layers.to_vec();
    if with_prev && layers[0] > 0 {
        v.insert(0, layers[0] - 1);
    }
    v
}

fn fit_sleep(
    model: &Model,
    arch: &Arch,
    copts: &ContextOptions,
    pairs: &[Pair],
    layers: &[usize],
    opts: &PatchOptions,
    progress: Progress,
) -> Result<(Vec<Delta>, Vec<LayerReport>)> {
    let info = model.info();
    let head_dim = arch.head_dim_v;
    let mut stats: Vec<sleep::SleepStats> = layers
        .iter()
        .map(|_| sleep::SleepStats::new(head_dim, info.n_head, info.n_head_kv))
        .collect();
    let mut ctx = Context::new(model, copts)?;
    let mut preq = Request::new(&[Kind::AttnProbs, Kind::Value], layers.iter().copied());
    let mut ureq = Request::new(&[Kind::Value], layers.iter().copied());
    (preq.stop_early, ureq.stop_early) = (true, true);
    for (i, p) in pairs.iter().enumerate() {
        let pc = capture::run(&mut ctx, &p.prompted, &preq)?;
        let prows: Rows = pc.tensors;
        let u = slice_rows(
            capture::run(&mut ctx, &p.unprompted, &ureq)?,
            p.align.unprompted_start,
            p.align.len,
        );
        for (s, &l) in stats.iter_mut().zip(layers) {
            s.add(
                l,
                &prows,
                1..p.align.prompted_start,
                p.align.prompted_start,
                p.align.len,
                &u,
            )?;
        }
        progress("capture", i + 1, pairs.len());
    }
    let deltas = stats
        .iter()
        .zip(layers)
        .map(|(s, &l)| s.delta(l, opts.alpha, opts.beta))
        .collect();
    let reports = stats
        .iter()
        .zip(layers)
        .map(|(s, &l)| LayerReport {
            layer: l,
            lambda: None,
            val_rel_error: None,
            alpha: Some(s.alpha()),
        })
        .collect();
    Ok((deltas, reports))
}

#[allow(clippy::too_many_arguments)]
fn fit_parallel(
    model: &Model,
    src: &gguf::GgufFile,
    copts: &ContextOptions,
    arch: &Arch,
    pairs: &[Pair],
    layers: &[usize],
    opts: &PatchOptions,
    weights: &dyn method::Weights,
    phases: &mut Vec<(String, f64)>,
    progress: Progress,
) -> Result<(Fitted, Vec<LayerReport>)> {
    // Each capture and each solve allocates and frees the same large buffers; keeping freed
    // memory spares the kernel re-zeroing their pages (parallel mode only: it raises the
    // sequential mode's peak RSS over its goal).
    crate::engine::retain_freed_memory();
    let t = Instant::now();
    let (pk, uk) = method::kinds(opts.method, arch);
    let cl = capture_layers(layers, true);
    let mut preq = Request::new(&pk, cl.iter().copied());
    let mut ureq = Request::new(&uk, cl.iter().copied());
    (preq.stop_early, ureq.stop_early) = (true, true);
    let mut problems: Vec<ridge::Ridge> = layers
        .iter()
        .map(|_| method::problem(opts.method, arch))
        .collect();
    let mut ctx = Context::new(model, copts)?;
    for (i, p) in pairs.iter().enumerate() {
        let pr = slice_rows(
            capture::run(&mut ctx, &p.prompted, &preq)?,
            p.align.prompted_start,
            p.align.len,
        );
        let ur = slice_rows(
            capture::run(&mut ctx, &p.unprompted, &ureq)?,
            p.align.unprompted_start,
            p.align.len,
        );
        for (prob, &l) in problems.iter_mut().zip(layers) {
            method::add_rows(opts.method, arch, l, &pr, &ur, true, prob, is_validation(i))?;
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
    let mut todo: Vec<(ridge::Ridge, usize)> =
        problems.into_iter().zip(layers.iter().copied()).collect();
    let at_once = rayon::current_num_threads().max(1);
    while !todo.is_empty() {
        let batch: Vec<(ridge::Ridge, usize)> = todo.drain(..at_once.min(todo.len())).collect();
        let t = Instant::now();
        let solved: Vec<Result<(Vec<Delta>, LayerReport)>> =
            crate::engine::with_single_threaded_lapack(|| {
                batch
                    .into_par_iter()
                    .map(|(mut prob, l)| solve_layer(opts, l, &mut prob, weights))
                    .collect()
            });
        t_solve += t.elapsed().as_secs_f64();
        for s in solved {
            let (d, r) = s?;
            reports.push(r);
            let t = Instant::now();
            let (e, r) = edit::to_gguf_edits(src, &d, opts.strength, opts.edit_type)?;
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

fn solve_layer(
    opts: &PatchOptions,
    l: usize,
    prob: &mut ridge::Ridge,
    weights: &dyn method::Weights,
) -> Result<(Vec<Delta>, LayerReport)> {
    let importance = prob.feature_power();
    let sol = prob.solve(opts.lambda)?;
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

/// `sleep.*` keys of this patch (the latest), and `sleep.history`: one line per patch the
/// model has received, oldest first, so stacked patches stay on record.
fn provenance(
    edits: &mut gguf::Edits,
    src: &gguf::Header,
    system: &str,
    opts: &PatchOptions,
    layers: (usize, usize),
) {
    let sha = Sha256::digest(system.as_bytes());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let mode = if opts.sequential {
        "sequential"
    } else {
        "parallel"
    };
    let line = format!(
        "method={} mode={mode} strength={} layers={}..{} calibration={} prompt_sha256={hex} version={}",
        opts.method.name(),
        opts.strength,
        layers.0,
        layers.1,
        opts.questions.len(),
        env!("CARGO_PKG_VERSION"),
    );
    edits
        .set_metadata("sleep.version", env!("CARGO_PKG_VERSION"))
        .set_metadata("sleep.method", opts.method.name())
        .set_metadata("sleep.mode", mode)
        .set_metadata("sleep.strength", opts.strength)
        .set_metadata("sleep.prompt_sha256", hex)
        .set_metadata("sleep.calibration_size", opts.questions.len() as u32)
        .set_metadata("sleep.layers", format!("{}..{}", layers.0, layers.1))
        .set_metadata(
            "sleep.edit_type",
            format!("{:?}", opts.edit_type).to_lowercase(),
        )
        .set_metadata(
            "sleep.ridge",
            match opts.lambda {
                Lambda::Auto => "auto".to_string(),
                Lambda::Fixed(l) => format!("{l}"),
            },
        );
    if opts.method == Method::Sleep {
        edits.set_metadata("sleep.beta", opts.beta as f32);
        edits.set_metadata(
            "sleep.alpha",
            opts.alpha.map_or("measured".to_string(), |a| a.to_string()),
        );
    }
    match &opts.then {
        Some(then) => then.apply(edits, src, Some(line)),
        None => push_history(edits, src, [line]),
    }
}

/// Set `sleep.history`: the source's lines (oldest first), then `lines` for this edit.
pub(crate) fn push_history(
    edits: &mut gguf::Edits,
    src: &gguf::Header,
    lines: impl IntoIterator<Item = String>,
) {
    let mut history = previous_history(src);
    history.extend(lines);
    edits.set_metadata(
        "sleep.history",
        gguf::Value::Array(gguf::Array::new(
            gguf::ValueType::String,
            history.into_iter().map(gguf::Value::from).collect(),
        )),
    );
}

/// The history lines of a model patched before: its `sleep.history`, or, for a file from before
/// the history was kept, one line made from its `sleep.*` keys.
fn previous_history(src: &gguf::Header) -> Vec<String> {
    let m = &src.metadata;
    if let Some(gguf::Value::Array(a)) = m.get("sleep.history") {
        return a
            .items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    match (m.get_str("sleep.method"), m.get_str("sleep.prompt_sha256")) {
        (Some(method), Some(sha)) => vec![format!("method={method} prompt_sha256={sha}")],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod provenance_tests {
    use super::*;

    #[test]
    fn a_later_stage_appends_its_line_and_replaces_keys() {
        let mut meta = gguf::Metadata::new();
        meta.set(
            "sleep.history",
            gguf::Value::Array(gguf::Array::new(
                gguf::ValueType::String,
                vec![gguf::Value::from("first".to_string())],
            )),
        );
        let src = gguf::Header::new(3, meta, Vec::new()).expect("header");
        let mut keys = gguf::Metadata::new();
        keys.set("sleep.method", "bake");
        let later = Provenance {
            history: "third".into(),
            keys,
        };
        let mut edits = gguf::Edits::new();
        edits.set_metadata("sleep.method", "down");
        later.apply(&mut edits, &src, Some("second".into()));
        let set: Vec<(&str, &gguf::Value)> = edits
            .metadata_edits()
            .iter()
            .filter_map(|e| match e {
                gguf::MetadataEdit::Set(k, v) => Some((k.as_str(), v)),
                gguf::MetadataEdit::Remove(_) => None,
            })
            .collect();
        let last = |key: &str| set.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let history: Vec<&str> = match last("sleep.history") {
            Some(gguf::Value::Array(a)) => a.items.iter().filter_map(|v| v.as_str()).collect(),
            other => panic!("no history: {other:?}"),
        };
        assert_eq!(history, ["first", "second", "third"]);
        assert_eq!(last("sleep.method").and_then(|v| v.as_str()), Some("bake"));
    }
}
