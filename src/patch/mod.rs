//! `patch`: bake a system prompt into a model's weights without training.
//!
//! The flow ([`patch`]): the prompted model answers the calibration questions
//! ([`crate::material`]); each exchange runs with and without the prompt, capturing per-layer
//! activations at the aligned tokens; a method ([`method`], [`sleep`]) turns the differences
//! into tensor edits, fitted layer by layer ([`sequential`], the default) or all at once
//! ([`parallel`]); [`crate::store`] requantizes them and records provenance, and the result is
//! written as a new GGUF, or exported as an adapter ([`crate::export`]).
//!
//! Files: [`options`] (what a run is asked), [`facts`] (what it reads of the model), [`fit`]
//! (what the modes share), [`ridge`] (the least-squares solve), [`slice`] (one layer cut out
//! into a file), [`advance`] (the stream past a fitted layer in closed form), [`spill`]
//! (captured rows on disk), [`report`] (what a run says it did).

pub mod advance;
pub mod facts;
pub mod fit;
pub mod method;
pub mod options;
pub mod parallel;
pub mod report;
pub mod ridge;
pub mod sequential;
pub mod sleep;
pub mod slice;
mod spill;
mod weights;

use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::Instant;

use crate::engine::{Batch, Context, ContextOptions, Model};
use crate::generate::GenOptions;
use crate::material::{self, Pair};
use crate::options::InvalidOptions;
use crate::store::output::{self, Scratch};
use crate::store::{self, provenance, Provenance};
use crate::text::convo::check_prompt_fits;
use facts::Arch;
use fit::Fitted;
pub use fit::Progress;
pub use method::Method;
pub use options::{Emit, PatchOptions, Supplied};
pub use report::{LayerReport, PatchReport};
pub use ridge::Lambda;
use weights::FileWeights;

/// Patch `input` with `system` baked in and write the result to `output`.
pub fn patch(
    input: &Path,
    output: &Path,
    system: &str,
    opts: &PatchOptions,
    progress: Progress,
) -> Result<PatchReport> {
    patch_with(input, output, system, opts, &Supplied::default(), progress)
}

/// [`patch`], with what the caller already has: replies, a teacher adapter, provenance.
pub fn patch_with(
    input: &Path,
    output: &Path,
    system: &str,
    opts: &PatchOptions,
    given: &Supplied,
    progress: Progress,
) -> Result<PatchReport> {
    if system.trim().is_empty() {
        anyhow::bail!("the system prompt is empty");
    }
    opts.validate()?;
    if given.teacher_lora.is_some() && (!opts.sequential || opts.method == Method::Sleep) {
        Err(InvalidOptions(
            "fitting to an adapter needs a `sequential` fit of vector, matrix or down".into(),
        ))?;
    }
    if !opts.in_place && output::same_file(input, output) {
        Err(InvalidOptions(format!(
            "the `output` {} is the input model: choose another, or write `in_place`",
            output.display()
        )))?;
    }
    // The adapter reproduces the unquantized patch, without biases.
    let opts = &match opts.emit {
        Emit::Lora(_) => PatchOptions {
            edit_type: store::EditType::F32,
            ..opts.clone()
        },
        _ => opts.clone(),
    };
    output::check_writable(output)?;
    output::remove_stale_scratch(output::parent_dir(output));
    let src = gguf::GgufFile::open(input)?;
    let mut arch = Arch::from_file(&src)?;
    opts.method.check(&arch)?;
    if matches!(opts.emit, Emit::Lora(_)) || !opts.bias {
        arch.has_out_biases = false; // a LoRA adapter has no place for a bias
    }
    let model = Model::load(input)?;
    let (l0, l1) = opts.layers.unwrap_or((0, arch.n_layer));
    if l0 >= l1 || l1 > arch.n_layer {
        Err(InvalidOptions(format!(
            "`layers` {l0}..{l1} is outside the model's 0..{}",
            arch.n_layer
        )))?;
    }
    check_prompt_fits(&model, system)?;

    let mut phases = Vec::new();
    let t = Instant::now();
    let gen = GenOptions {
        max_tokens: opts.max_tokens,
        ..Default::default()
    };
    let questions = opts.all_questions(system);
    let n_q = questions.len();
    let mut done = 0;
    let mut pairs = material::build(
        &model,
        system,
        &questions,
        &opts.renderings,
        &gen,
        given.replies.as_deref(),
        || {
            done += 1;
            progress("replies", done, n_q);
        },
    )?;
    if given.teacher_lora.is_some() {
        // The teacher is the adapted model used as the patched one will be: no system prompt.
        for p in &mut pairs {
            p.prompted = p.unprompted.clone();
            p.align.prompted_start = p.align.unprompted_start;
        }
    }
    phases.push(("replies".to_string(), t.elapsed().as_secs_f64()));
    let anchor_rows = material::anchors(&model, &opts.anchor_paragraphs())?;
    let anchor_tokens = anchor_rows.iter().map(|p| p.align.len).sum();
    pairs.extend(anchor_rows);
    let tokens: usize = pairs.iter().map(|p| p.align.len).sum();
    let content_rows: usize = pairs.iter().map(|p| p.content.len()).sum();
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
        let (d, r) = sleep::fit(&model, &arch, &copts, &pairs, &layers, opts, progress)?;
        phases.push(("capture+fit".to_string(), t.elapsed().as_secs_f64()));
        (Fitted::Deltas(d), r)
    } else if !opts.sequential {
        parallel::fit(
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
        let run = sequential::Run {
            src: &src,
            input,
            copts: &copts,
            arch: &arch,
            pairs: &pairs,
            opts,
            teacher: given.teacher_lora.as_deref(),
            weights: &weights,
        };
        run.fit(output::parent_dir(output), &layers, &mut phases, progress)?
    };

    let (mut edits, tensors) = match fitted {
        Fitted::Deltas(d) => {
            let t = Instant::now();
            let stored = store::to_gguf_edits(&src, &d, opts.strength, opts.edit_type)?;
            phases.push(("requantize".to_string(), t.elapsed().as_secs_f64()));
            stored
        }
        Fitted::Stored(e, r) => (e, r),
    };
    let own = record(system, opts, (l0, l1), n_q);
    provenance::record(&mut edits, src.header(), Some(&own), given.then.as_ref());
    let t = Instant::now();
    progress("write", 0, 1);
    let (bytes, export) = write(&src, &edits, output, opts)?;
    progress("write", 1, 1);
    phases.push(("write".to_string(), t.elapsed().as_secs_f64()));
    Ok(PatchReport {
        method: opts.method.name().to_string(),
        mode: opts.mode().to_string(),
        strength: opts.strength,
        questions: n_q,
        tokens,
        content_rows,
        content_weight: opts.content_weight,
        anchor_tokens,
        layers: layer_reports,
        tensors,
        phases,
        output: output.to_path_buf(),
        bytes,
        prefill_s,
        export,
    })
}

/// Write the patched model, or (`--emit lora|cvec`) merge it unquantized into a scratch file
/// beside the output and export that; returns the bytes written and the export's report.
fn write(
    src: &gguf::GgufFile,
    edits: &gguf::Edits,
    out: &Path,
    opts: &PatchOptions,
) -> Result<(u64, Option<crate::export::ExportReport>)> {
    if opts.emit == Emit::Merged {
        let wopts = gguf::WriteOptions {
            allow_overwrite_input: opts.in_place,
            ..Default::default()
        };
        return Ok((gguf::write(src, edits, out, &wopts)?.bytes, None));
    }
    let tmp = output::scratch_file(out, Scratch::Merged)?;
    gguf::write(src, edits, tmp.path(), &output::scratch_options())?;
    let merged = gguf::GgufFile::open(tmp.path())?;
    let r = match opts.emit {
        Emit::Lora(rank) => crate::export::lora::write(src, &merged, rank, out)?,
        _ => crate::export::cvec::write(src, &merged, out)?,
    };
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok((bytes, Some(r)))
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
            let mut batch = Batch::new(seq.len());
            for (i, &tok) in seq.iter().enumerate() {
                batch.push(tok, i as i32, 0, i + 1 == seq.len());
            }
            ctx.decode(&batch).context("prefill failed")?;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// What a patch records of itself: its `sleep.*` keys and its `sleep.history` line.
fn record(
    system: &str,
    opts: &PatchOptions,
    layers: (usize, usize),
    questions: usize,
) -> Provenance {
    let stage = provenance::Stage {
        method: opts.method.name(),
        mode: opts.mode(),
        strength: opts.strength,
        system,
        calibration: questions,
        layers: format!("{}..{}", layers.0, layers.1),
        edit_type: opts.edit_type,
    };
    let history = format!(
        "method={} mode={} strength={} layers={}..{} calibration={} prompt_sha256={} version={}",
        stage.method,
        stage.mode,
        opts.strength,
        layers.0,
        layers.1,
        stage.calibration,
        provenance::prompt_sha256(system),
        env!("CARGO_PKG_VERSION"),
    );
    let mut keys = stage.keys();
    keys.set(
        "sleep.ridge",
        match opts.lambda {
            Lambda::Auto => "auto".to_string(),
            Lambda::Fixed(l) => format!("{l}"),
        },
    );
    if opts.content_weight != 1.0 {
        keys.set("sleep.content_weight", opts.content_weight);
    }
    let anchors = opts.anchor_paragraphs().len();
    if anchors > 0 {
        keys.set("sleep.anchors", anchors as u32);
    }
    if opts.method == Method::Sleep {
        keys.set("sleep.beta", opts.beta as f32);
        keys.set(
            "sleep.alpha",
            opts.alpha.map_or("measured".to_string(), |a| a.to_string()),
        );
    }
    Provenance { history, keys }
}
