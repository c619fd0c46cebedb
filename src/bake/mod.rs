//! `bake`: Prompt Baking (Bhargava et al., 2024). A LoRA adapter is trained so that the model
//! used with no system prompt matches the model used with it, minimising
//! `KL(P(·|prompt, x) ‖ P_baked(·|x))` over the prompted model's own sampled replies.
//!
//! The flow ([`bake`]): the teacher (the prompted model in llama.cpp, [`teacher`]) samples
//! trajectories and records its next-token distributions; the student ([`student`]: the same
//! GGUF weights, dequantized and frozen, as a differentiable forward pass in candle) carries
//! adapters ([`lora`]), optionally warm-started from the training-free patch ([`warm`]); Adam
//! trains them ([`train`], with quantization-aware refreshes from [`qat`]); the result is
//! merged into the weights and requantized to their own types ([`Merge::Requantize`]), stored
//! by the patch fitted to the adapted model ([`Merge::Refit`]), or written as a LoRA adapter
//! GGUF llama.cpp loads with `--lora`. [`options`] holds the settings and every default.

pub mod hessians;
pub mod lora;
pub mod options;
pub mod qat;
pub mod report;
pub mod student;
pub mod teacher;
pub mod train;
pub mod warm;

use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::arch::Family;
use crate::engine::Model;
use crate::export::lora::{write_adapter, Factors};
use crate::options::InvalidOptions;
use crate::store::output::{self, Scratch};
use crate::store::{self, provenance, Delta, Provenance, TensorReport};
use crate::text::convo::check_prompt_fits;
use crate::text::is_validation;
pub use hessians::LayerHessians;
pub use lora::{LoraSet, Targets};
pub use options::{BakeEmit, BakeOptions, Init, Merge};
pub use report::{BakeReport, Progress};
pub use student::Student;
pub use teacher::{Example, TeacherOptions};
pub use train::{CurvePoint, TrainOptions};

/// Bake `system` into `input` and write the result to `output`.
pub fn bake(
    input: &Path,
    output: &Path,
    system: &str,
    opts: &BakeOptions,
    progress: Progress,
) -> Result<BakeReport> {
    if system.trim().is_empty() {
        bail!("the system prompt is empty");
    }
    opts.validate()?;
    if output::same_file(input, output) {
        Err(InvalidOptions(format!(
            "the `output` {} is the input model: choose another",
            output.display()
        )))?;
    }
    output::check_writable(output)?;
    output::remove_stale_scratch(output::parent_dir(output));
    crate::engine::retain_freed_memory();
    let src = gguf::GgufFile::open(input)?;
    student::Config::from_file(&src)?;
    let arch = src.header().architecture().unwrap_or_default();
    if opts.bias && !Family::of(arch)?.out_biases {
        Err(InvalidOptions(format!(
            "llama.cpp applies no attn_output or ffn_down bias to {arch} models: bake without \
             `bias`"
        )))?;
    }
    let mut phases = Vec::new();

    let t = Instant::now();
    let data = teach(input, system, opts, progress)?;
    phases.push(("teacher".to_string(), t.elapsed().as_secs_f64()));

    // The prompt's effect on the validation trajectories: the unmodified model's KL.
    let t = Instant::now();
    let original = Student::load(&src)?;
    // Recomputation holds one layer's activations, so a pass may hold more trajectories.
    let (micro, recompute) = {
        let c = original.config();
        let n_ff = original.matrix_shape(0, "ffn_down")?.1;
        let per_token = options::activation_bytes(c.n_layer, c.n_embd, n_ff);
        let tokens = data.train.iter().map(|e| e.tokens.len()).sum::<usize>() as f64
            / data.train.len().max(1) as f64;
        let recompute = opts
            .train
            .recompute
            .unwrap_or_else(|| options::default_recompute(per_token, tokens));
        let held = if recompute {
            per_token / c.n_layer.max(1) as f64
        } else {
            per_token
        };
        let micro = opts
            .train
            .micro_batch
            .unwrap_or_else(|| options::default_micro_batch(held, tokens, opts.train.batch));
        (micro, recompute)
    };
    let val_base = train::mean_kl(&original, &LoraSet::default(), &data.val, micro)?;
    phases.push(("load student".to_string(), t.elapsed().as_secs_f64()));

    // The warm start: the patched model, kept in a scratch file beside the output until the
    // result is written; training, quantization and merging then start from its weights.
    let (patched, student, first_kl) = match opts.init {
        Init::None => (None, original, val_base),
        Init::Patch => {
            drop(original);
            let t = Instant::now();
            let tmp = output::scratch_file(output, Scratch::Patch)?;
            warm::run_patch(input, tmp.path(), system, &data.train, opts, None, progress)?;
            let file = gguf::GgufFile::open(tmp.path())?;
            let student = Student::load(&file)?;
            let kl = train::mean_kl(&student, &LoraSet::default(), &data.val, micro)?;
            phases.push(("warm start (patch)".to_string(), t.elapsed().as_secs_f64()));
            (Some((tmp, file)), student, kl)
        }
    };
    let src = patched.as_ref().map_or(&src, |(_, f)| f);
    let init_recovery = patched
        .as_ref()
        .map(|_| 1.0 - first_kl / val_base.max(f64::MIN_POSITIVE));
    let lora = adapters(&student, opts)?;

    let t = Instant::now();
    let importance = record_importance(&student, &lora, &data, micro)?;
    let mut train_opts = opts.train.clone();
    train_opts.micro_batch = Some(micro);
    train_opts.recompute = Some(recompute);
    if opts.emit != BakeEmit::Merged || opts.refit() {
        // An adapter is stored exactly; a refit reproduces the full-precision adapter.
        train_opts.qat_from = None;
    }
    let mut snapshot = opts.save_adapter.clone();
    let steps = opts.train.steps;
    let curve = train::train(
        &student,
        &lora,
        &data.train,
        &data.val,
        val_base,
        first_kl,
        &train_opts,
        &mut || {
            // The adapter as trained in full precision, before quantization-aware training
            // bends it toward what survives rounding (as an adapter it would then overshoot).
            if let Some(p) = snapshot.take() {
                adapter_file(src, &lora, opts.strength, &p)?;
            }
            qat::refresh(&student, &lora, src, opts.edit_type, &importance)
        },
        &mut |s, l| progress("train", s, steps, Some(l)),
    )?;
    phases.push(("train".to_string(), t.elapsed().as_secs_f64()));
    let steps_to_0_9 = curve.iter().find(|p| p.val_recovery >= 0.9).map(|p| p.step);

    let t = Instant::now();
    progress("write", 0, 1, None);
    if let Some(p) = &snapshot {
        adapter_file(src, &lora, opts.strength, p)?;
    }
    let own = record(src.header(), system, opts);
    let (tensors, bytes) = match opts.emit {
        BakeEmit::Lora => {
            drop(student);
            (Vec::new(), adapter_file(src, &lora, opts.strength, output)?)
        }
        BakeEmit::Merged if opts.refit() => {
            drop(student);
            // The patch, fitted to the adapter, is the output: it records bake's provenance
            // over its own in its one write.
            let adapter = output::scratch_file(output, Scratch::Adapter)?;
            adapter_file(src, &lora, opts.strength, adapter.path())?;
            let refit = warm::Refit {
                teacher: adapter.path(),
                provenance: own,
            };
            let r = warm::run_patch(
                input,
                output,
                system,
                &data.train,
                opts,
                Some(refit),
                progress,
            )?;
            (r.tensors, r.bytes)
        }
        BakeEmit::Merged => merge(src, student, &lora, &data, &importance, &own, opts, output)?,
    };
    progress("write", 1, 1, None);
    let phase = if opts.refit() {
        "refit (patch)"
    } else {
        "write"
    };
    phases.push((phase.to_string(), t.elapsed().as_secs_f64()));
    Ok(BakeReport {
        questions: opts.questions.len(),
        train_trajectories: data.train.len(),
        train_tokens: data.positions,
        val_trajectories: data.val.len(),
        mean_tail_mass: data.tail,
        params: lora.n_params(),
        micro_batch: micro,
        recompute,
        val_kl_base: val_base,
        curve,
        steps_to_0_9,
        init_recovery,
        tensors,
        phases,
        output: output.to_path_buf(),
        bytes,
    })
}

/// The teacher's trajectories, split by question into training and validation.
struct Taught {
    train: Vec<Example>,
    val: Vec<Example>,
    /// reply positions trained on
    positions: usize,
    /// mean teacher mass outside the kept top-k over them
    tail: f64,
}

/// Sample the prompted model's trajectories; every fifth question's are held out (at most
/// `opts.max_val` of them kept, spread evenly).
fn teach(input: &Path, system: &str, opts: &BakeOptions, progress: Progress) -> Result<Taught> {
    let model = Model::load(input)?;
    check_prompt_fits(&model, system)?;
    let examples = teacher::trajectories(
        &model,
        system,
        &opts.questions,
        &opts.teacher,
        &mut |p, d, n| progress(p, d, n, None),
    )?;
    let (val, train): (Vec<Example>, Vec<Example>) = examples
        .into_iter()
        .partition(|e| is_validation(e.question_index));
    if train.is_empty() {
        bail!("the prompted model gave no replies to train on");
    }
    let stride = val.len().div_ceil(opts.max_val.max(1)).max(1);
    let val: Vec<Example> = val.into_iter().step_by(stride).collect();
    let positions: usize = train.iter().map(|e| e.n).sum();
    let tail: f64 = train
        .iter()
        .flat_map(|e| e.tail.iter())
        .map(|&t| f64::from(t).exp())
        .sum::<f64>()
        / positions.max(1) as f64;
    Ok(Taught {
        train,
        val,
        positions,
        tail,
    })
}

/// The trajectories output-aware rounding takes its Grams from: the first training ones.
const GRAM_TRAJECTORIES: usize = 16;

/// The adapted matrices' mean squared inputs on the first training trajectories (the
/// importance weights requantization takes), before training.
fn record_importance(
    student: &Student,
    lora: &LoraSet,
    data: &Taught,
    micro: usize,
) -> Result<BTreeMap<String, Vec<f32>>> {
    student.record_inputs(false);
    let some = &data.train[..data.train.len().min(GRAM_TRAJECTORIES)];
    train::mean_kl(student, lora, some, micro)?;
    Ok(student.take_inputs().0)
}

/// The merged output: every `B·A` added to its matrix and requantized (trained bias changes
/// stored exactly), with bake's provenance; returns the stored tensors and the bytes written.
/// Layer by layer: with output-aware rounding each layer's Grams (over the first training and
/// the validation trajectories, the latter's part choosing the damping) are summed by
/// [`LayerHessians`] as its matrices are stored, and dropped after, with the student's copy of
/// that layer; without, the student is dropped first: the output's matrices come from `src`.
#[allow(clippy::too_many_arguments)]
fn merge(
    src: &gguf::GgufFile,
    student: Student,
    lora: &LoraSet,
    data: &Taught,
    importance: &BTreeMap<String, Vec<f32>>,
    own: &Provenance,
    opts: &BakeOptions,
    out: &Path,
) -> Result<(Vec<TensorReport>, u64)> {
    let rounding = opts.output_rounding && opts.emit == BakeEmit::Merged;
    let n_layer = student.config().n_layer;
    let fresh = if rounding {
        adapters(&student, opts)?
    } else {
        LoraSet::default()
    };
    let mut walk = if rounding {
        let fit = &data.train[..data.train.len().min(GRAM_TRAJECTORIES)];
        Some(LayerHessians::new(student, &fresh, fit, &data.val)?)
    } else {
        drop(student);
        None
    };
    let layer_of = |name: &str| gguf::block_of(name).map(|(l, _)| l);
    let (mut edits, mut reports) = (gguf::Edits::new(), Vec::new());
    for l in 0..=n_layer {
        // Layer `n_layer` collects anything outside the blocks.
        let here = |name: &str| layer_of(name).map_or(l == n_layer, |k| k == l);
        let hessians = match walk.as_mut() {
            Some(w) if l < n_layer => {
                debug_assert_eq!(w.layer(), l);
                w.next_layer()?
            }
            _ => BTreeMap::new(),
        };
        let mut deltas = Vec::new();
        for (name, ad) in lora.adapters.iter().filter(|(n, _)| here(n)) {
            deltas.push(Delta::Matrix {
                tensor: name.clone(),
                delta: ad.factors()?,
                importance: importance.get(name).cloned(),
                hessian: hessians.get(&student::input_of(name)).cloned(),
            });
        }
        for (name, b) in lora.biases.iter().filter(|(n, _)| here(n)) {
            deltas.push(Delta::Bias {
                tensor: name.clone(),
                after: name.replace(".bias", ".weight"),
                values: b.as_tensor().to_vec1::<f32>()?,
            });
        }
        let (e, r) = store::to_gguf_edits(src, &deltas, opts.strength, opts.edit_type)?;
        edits.extend(e);
        reports.extend(r);
    }
    provenance::record(&mut edits, src.header(), None, Some(own));
    let r = gguf::write(src, &edits, out, &gguf::WriteOptions::default())?;
    Ok((reports, r.bytes))
}

/// Projections whose bias change is trained with `opts.bias`: the two that write into the
/// residual stream (a change to `attn_v`'s bias reaches it only through `attn_output`).
pub const BIAS_KINDS: [&str; 2] = ["attn_output", "ffn_down"];

/// A fresh adapter (`B = 0`) of rank `opts.rank` on every targeted matrix, and with
/// `opts.bias` a zero bias change on [`BIAS_KINDS`].
fn adapters(student: &Student, opts: &BakeOptions) -> Result<LoraSet> {
    let mut set = LoraSet::default();
    for l in 0..student.config().n_layer {
        if opts.bias {
            for kind in BIAS_KINDS {
                let (n_out, _) = student.matrix_shape(l, kind)?;
                set.add_bias(&format!("blk.{l}.{kind}.bias"), n_out)?;
            }
        }
        for (j, kind) in opts.targets.kinds().iter().enumerate() {
            let (n_out, n_in) = student.matrix_shape(l, kind)?;
            let seed = opts.train.seed ^ ((l * 16 + j) as u64).wrapping_mul(0x9E37_79B9);
            set.add_fresh(
                &format!("blk.{l}.{kind}.weight"),
                n_out,
                n_in,
                opts.rank,
                seed,
            )?;
        }
    }
    Ok(set)
}

/// Write the adapters as a LoRA GGUF llama.cpp loads with `--lora` (`B` scaled by `strength`);
/// `adapter.lora.alpha` is the rank when every adapter has the same one (llama.cpp's scale
/// `alpha / r` is then 1), else 0, which llama.cpp reads as "no scaling" for every rank.
/// Returns the bytes written.
pub fn adapter_file(
    src: &gguf::GgufFile,
    lora: &LoraSet,
    strength: f32,
    out: &Path,
) -> Result<u64> {
    let arch = src
        .header()
        .architecture()
        .context("the model has no general.architecture")?;
    let ranks: std::collections::BTreeSet<usize> =
        lora.adapters.values().map(|a| a.rank()).collect();
    let mut factors = Vec::new();
    for (name, ad) in &lora.adapters {
        let (_, n_in) = ad.a.as_tensor().dims2()?;
        factors.push(Factors {
            weight: name.clone(),
            n_in,
            n_out: ad.b.dim(0)?,
            a: ad.a.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            b: (ad.b.as_tensor() * f64::from(strength))?
                .flatten_all()?
                .to_vec1::<f32>()?,
        });
    }
    let alpha = match (ranks.len(), ranks.first()) {
        (1, Some(&r)) => r as f32,
        _ => 0.0,
    };
    write_adapter(arch, &factors, alpha, out)?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

/// What a bake records of itself: its `sleep.*` keys and its `sleep.history` line.
fn record(src: &gguf::Header, system: &str, opts: &BakeOptions) -> Provenance {
    let init = match opts.init {
        Init::None => "none",
        Init::Patch => "patch",
    };
    let merge = match opts.merge {
        Merge::Requantize => "requantize",
        Merge::Refit => "refit",
    };
    let params = format!(
        "steps={} rank={} lr={} targets={} bias={} init={init} merge={merge} trajectories={} temperature={} batch={}",
        opts.train.steps,
        opts.rank,
        opts.train.lr,
        opts.targets.name(),
        opts.bias,
        opts.teacher.per_question,
        opts.teacher.temperature,
        opts.train.batch,
    );
    let history = format!(
        "method=bake {params} strength={} calibration={} prompt_sha256={} version={}",
        opts.strength,
        opts.questions.len(),
        provenance::prompt_sha256(system),
        env!("CARGO_PKG_VERSION"),
    );
    let stage = provenance::Stage {
        method: "bake",
        mode: "lora-kl",
        strength: opts.strength,
        system,
        calibration: opts.questions.len(),
        layers: format!("0..{}", src.arch_u64("block_count").unwrap_or(0)),
        edit_type: opts.edit_type,
    };
    let mut keys = stage.keys();
    keys.set("sleep.bake", params);
    Provenance { history, keys }
}
