//! `bake`: Prompt Baking (Bhargava et al., 2024). A LoRA adapter is trained so that the model
//! used with no system prompt matches the model used with it, minimising
//! `KL(P(·|prompt, x) ‖ P_baked(·|x))` over the prompted model's own sampled replies.
//!
//! The flow: the teacher (the prompted model in llama.cpp, [`teacher`]) samples trajectories
//! and records its next-token distributions; the student ([`student`]: the same GGUF weights,
//! dequantized and frozen, as a differentiable forward pass in candle) carries adapters
//! ([`lora`]), optionally warm-started from the training-free `patch`; Adam trains them
//! ([`train`]); the result is merged into the weights and requantized to their own types
//! ([`Merge::Requantize`]), stored by the training-free patch fitted to the adapted model
//! ([`Merge::Refit`]), or written as a LoRA adapter GGUF llama.cpp loads with `--lora`.

pub mod frozen;
pub mod fused;
pub mod lora;
pub mod qat;
pub mod student;
pub mod teacher;
pub mod train;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::Model;
use crate::patch::rounding::Hessian;
use crate::patch::{self, Delta, EditType, TensorReport};
pub use lora::{LoraSet, Targets};
pub use student::Student;
pub use teacher::{Example, TeacherOptions};
pub use train::{CurvePoint, TrainOptions};

/// Where training starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// the unmodified model (`B = 0`)
    None,
    /// the model as the training-free `patch` (its default method, sequential, requantized to
    /// the stored types) writes it: the student trains adapters on top of the patched weights
    Patch,
}

/// How a trained adapter becomes a model's own weights (merged output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `W + B·A` of every adapted matrix requantized to its stored type (with
    /// quantization-aware training from `TrainOptions::qat_from`)
    Requantize,
    /// the adapter, trained in full precision, is the teacher of the training-free `patch`
    /// (`down`, sequential, output-aware rounding): each layer's `ffn_down` and its bias are
    /// fitted, in the file's own types, to reproduce the adapted model's activations
    Refit,
}

/// What `bake` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BakeEmit {
    /// the adapter merged into the weights, requantized
    Merged,
    /// a LoRA adapter GGUF
    Lora,
}

/// Settings of one `bake` run.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// calibration questions (every fifth is held out for the validation curve)
    pub questions: Vec<String>,
    /// teacher settings
    pub teacher: TeacherOptions,
    /// training settings
    pub train: TrainOptions,
    /// adapter rank
    pub rank: usize,
    /// projections adapted
    pub targets: Targets,
    /// warm start
    pub init: Init,
    /// most calibration questions the warm start's or the refit's patch fits on (drawn evenly
    /// from the training questions, with the teacher's first sampled reply to each)
    pub init_questions: usize,
    /// scale of the trained adapter (0 = identity)
    pub strength: f32,
    /// merged model or adapter
    pub emit: BakeEmit,
    /// how a merged output takes in the adapter
    pub merge: Merge,
    /// also train a change to the biases of `attn_output` and `ffn_down` (merged output only:
    /// stored exactly in F32, where a 4-bit grid rounds most of a low-rank change away)
    pub bias: bool,
    /// storage of merged matrices
    pub edit_type: EditType,
    /// round merged adapters to keep each layer's output (see [`patch::rounding`]); the warm
    /// start's patch always is (its default)
    pub output_rounding: bool,
    /// most validation trajectories
    pub max_val: usize,
    /// also write the adapter here (with a merged output): as trained in full precision, just
    /// before quantization-aware training starts, or at the end without it
    pub save_adapter: Option<PathBuf>,
}

/// What a `bake` run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BakeReport {
    /// calibration questions
    pub questions: usize,
    /// trajectories trained on
    pub train_trajectories: usize,
    /// reply tokens trained on
    pub train_tokens: usize,
    /// trajectories the curve is measured on (questions never trained on)
    pub val_trajectories: usize,
    /// mean teacher mass outside the kept top-k (what the KL lumps together)
    pub mean_tail_mass: f64,
    /// trainable parameters
    pub params: usize,
    /// validation KL of the unmodified model (the prompt's effect)
    pub val_kl_base: f64,
    /// the training curve
    pub curve: Vec<CurvePoint>,
    /// first step whose validation recovery reached 0.9
    pub steps_to_0_9: Option<usize>,
    /// warm start: validation recovery of the patched model before training
    pub init_recovery: Option<f64>,
    /// per stored tensor (merged output)
    pub tensors: Vec<TensorReport>,
    /// (phase, seconds)
    pub phases: Vec<(String, f64)>,
    /// output path
    pub output: PathBuf,
    /// output size in bytes
    pub bytes: u64,
}

/// Progress callback: (phase, done, total, loss of the last step).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize, Option<f64>);

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
    if opts.questions.is_empty() {
        bail!("no calibration questions");
    }
    if opts.rank == 0 {
        bail!("--rank must be at least 1");
    }
    if opts.train.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if patch::same_file(input, output) {
        bail!(
            "the output {} is the input model: choose another -o",
            output.display()
        );
    }
    patch::check_writable(output)?;
    if opts.init == Init::Patch && (opts.emit == BakeEmit::Lora || opts.save_adapter.is_some()) {
        bail!("--init patch changes the weights themselves, which an adapter cannot carry: use --emit merged");
    }
    if opts.bias && (opts.emit == BakeEmit::Lora || opts.save_adapter.is_some()) {
        bail!("an adapter file cannot carry bias changes: bake without --bias for --emit lora or --save-adapter");
    }
    let refit = opts.emit == BakeEmit::Merged && opts.merge == Merge::Refit;
    if refit && (opts.init == Init::Patch || opts.bias) {
        bail!("--merge refit fits the patch to an adapter trained from the unmodified model: use it with --init none and without --bias");
    }
    if opts.init == Init::Patch && opts.strength != 1.0 {
        bail!("--strength scales an adapter trained from the unmodified model: use --init none with it (or `patch --strength`)");
    }
    crate::engine::retain_freed_memory();
    let src = gguf::GgufFile::open(input)?;
    student::Config::from_file(&src)?;
    let arch = src.header().architecture().unwrap_or_default();
    if opts.bias && !patch::applies_out_biases(arch) {
        bail!("llama.cpp applies no attn_output or ffn_down bias to {arch} models: bake without --bias");
    }
    let mut phases = Vec::new();

    let t = Instant::now();
    let model = Model::load(input)?;
    patch::check_prompt_fits(&model, system)?;
    let examples = teacher::trajectories(
        &model,
        system,
        &opts.questions,
        &opts.teacher,
        &mut |p, d, n| progress(p, d, n, None),
    )?;
    drop(model);
    phases.push(("teacher".to_string(), t.elapsed().as_secs_f64()));
    let (mut train_set, mut val) = (Vec::new(), Vec::new());
    for e in examples {
        if e.question_index % 5 == 4 {
            val.push(e);
        } else {
            train_set.push(e);
        }
    }
    if train_set.is_empty() {
        bail!("the prompted model gave no replies to train on");
    }
    let stride = val.len().div_ceil(opts.max_val.max(1)).max(1);
    let val: Vec<Example> = val.into_iter().step_by(stride).collect();
    let positions: usize = train_set.iter().map(|e| e.n).sum();
    let tail: f64 = train_set
        .iter()
        .flat_map(|e| e.tail.iter())
        .map(|&t| f64::from(t).exp())
        .sum::<f64>()
        / positions.max(1) as f64;

    // The prompt's effect on the validation trajectories: the unmodified model's KL.
    let t = Instant::now();
    let original = Student::load(&src)?;
    let val_base = train::mean_kl(&original, &LoraSet::default(), &val, opts.train.batch)?;
    phases.push(("load student".to_string(), t.elapsed().as_secs_f64()));

    // The warm start: the patched model, kept in a temporary file next to the output until
    // the result is written; training, quantization and merging then start from its weights.
    let (patched, student, first_kl) = match opts.init {
        Init::None => (None, original, val_base),
        Init::Patch => {
            drop(original);
            let t = Instant::now();
            let tmp = scratch(output, "patch")?;
            run_patch(input, tmp.path(), system, &train_set, opts, None, progress)?;
            let file = gguf::GgufFile::open(tmp.path())?;
            let student = Student::load(&file)?;
            let kl = train::mean_kl(&student, &LoraSet::default(), &val, opts.train.batch)?;
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
    // Importance weights for requantization (during QAT and when writing): the adapted
    // matrices' mean squared inputs on training trajectories; for output-aware rounding also
    // their Grams, on those and on the validation trajectories (the damping is chosen on them).
    let rounding = opts.output_rounding && opts.emit == BakeEmit::Merged;
    student.record_inputs(rounding);
    train::mean_kl(
        &student,
        &lora,
        &train_set[..train_set.len().min(16)],
        opts.train.batch,
    )?;
    let (importance, train_grams) = student.take_inputs();
    let hessians = if rounding {
        student.record_inputs(true);
        train::mean_kl(&student, &lora, &val, opts.train.batch)?;
        hessians(train_grams, student.take_inputs().1)
    } else {
        BTreeMap::new()
    };
    let steps = opts.train.steps;
    let mut train_opts = opts.train.clone();
    if opts.emit != BakeEmit::Merged || refit {
        // An adapter is stored exactly; a refit reproduces the full-precision adapter.
        train_opts.qat_from = None;
    }
    let mut snapshot = opts.save_adapter.clone();
    let curve = train::train(
        &student,
        &lora,
        &train_set,
        &val,
        val_base,
        first_kl,
        &train_opts,
        &mut || {
            // The adapter as trained in full precision, before quantization-aware training
            // bends it toward what survives rounding (as an adapter it would then overshoot).
            if let Some(p) = snapshot.take() {
                write_adapter(src, &lora, opts.strength, &p)?;
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
        write_adapter(src, &lora, opts.strength, p)?;
    }
    let (tensors, bytes) = match opts.emit {
        BakeEmit::Lora => (
            Vec::new(),
            write_adapter(src, &lora, opts.strength, output)?,
        ),
        BakeEmit::Merged if refit => {
            // The patch, fitted to the adapter, is the output: it records bake's provenance over
            // its own in its one write.
            let adapter = scratch(output, "adapter")?;
            write_adapter(src, &lora, opts.strength, adapter.path())?;
            let refit = Refit {
                teacher: adapter.path(),
                provenance: provenance(src.header(), system, opts),
            };
            let r = run_patch(
                input,
                output,
                system,
                &train_set,
                opts,
                Some(refit),
                progress,
            )?;
            (r.tensors, r.bytes)
        }
        BakeEmit::Merged => {
            let mut deltas = Vec::new();
            for (name, ad) in &lora.adapters {
                deltas.push(Delta::Matrix {
                    tensor: name.clone(),
                    delta: ad.delta(1.0)?,
                    importance: importance.get(name).cloned(),
                    hessian: hessians.get(&student::input_of(name)).cloned(),
                });
            }
            for (name, b) in &lora.biases {
                deltas.push(Delta::Bias {
                    tensor: name.clone(),
                    after: name.replace(".bias", ".weight"),
                    values: b.as_tensor().to_vec1::<f32>()?,
                });
            }
            let (mut edits, reports) =
                patch::edit::to_gguf_edits(src, &deltas, opts.strength, opts.edit_type)?;
            provenance(src.header(), system, opts).apply(&mut edits, src.header(), None);
            let r = gguf::write(src, &edits, output, &gguf::WriteOptions::default())?;
            (reports, r.bytes)
        }
    };
    progress("write", 1, 1, None);
    let phase = if refit { "refit (patch)" } else { "write" };
    phases.push((phase.to_string(), t.elapsed().as_secs_f64()));
    Ok(BakeReport {
        questions: opts.questions.len(),
        train_trajectories: train_set.len(),
        train_tokens: positions,
        val_trajectories: val.len(),
        mean_tail_mass: tail,
        params: lora.n_params(),
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

/// Per input, the Hessian output-aware rounding weighs a merged matrix's error by: the Gram
/// over the training and validation trajectories, the latter's part for choosing the damping.
fn hessians(
    train: BTreeMap<String, ndarray::Array2<f32>>,
    mut val: BTreeMap<String, ndarray::Array2<f32>>,
) -> BTreeMap<String, Arc<Hessian>> {
    train
        .into_iter()
        .map(|(k, g)| {
            let v = val.remove(&k);
            let gram = match &v {
                Some(v) => g + v,
                None => g,
            };
            let h = Hessian {
                gram,
                val: v,
                bias: None,
                search: true,
            };
            (k, Arc::new(h))
        })
        .collect()
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

/// What `--merge refit` hands the patch: the adapter whose activations are its targets, and
/// bake's provenance to record over the patch's own.
struct Refit<'a> {
    teacher: &'a Path,
    provenance: patch::Provenance,
}

/// Run the training-free patch (its defaults: `down`, sequential, output-aware rounding; stored
/// as `opts.edit_type`) into `out`, fitted on at most `opts.init_questions` of the training
/// questions (never the validation ones) with the teacher's sampled replies as its replies, so
/// no reply is generated twice. Its targets are the prompted model's activations, or with
/// `refit` those of the model with its adapter.
fn run_patch(
    input: &Path,
    out: &Path,
    system: &str,
    train_set: &[Example],
    opts: &BakeOptions,
    refit: Option<Refit>,
    progress: Progress,
) -> Result<patch::PatchReport> {
    let (questions, replies) = init_material(train_set, opts.init_questions);
    let (teacher_lora, then) = match refit {
        Some(r) => (Some(r.teacher.to_path_buf()), Some(r.provenance)),
        None => (None, None),
    };
    let popts = patch::PatchOptions {
        method: patch::Method::Down,
        sequential: true,
        strength: 1.0,
        layers: None,
        questions,
        lambda: patch::Lambda::Auto,
        edit_type: opts.edit_type,
        output_rounding: true,
        alpha: None,
        beta: 1.0,
        max_tokens: opts.teacher.max_tokens,
        in_place: false,
        measure_prefill: false,
        emit: patch::Emit::Merged,
        bias: true,
        replies: Some(replies),
        teacher_lora,
        then,
    };
    patch::patch(input, out, system, &popts, &mut |p, d, n| {
        progress(&format!("patch {p}"), d, n, None)
    })
}

/// A temporary `.gguf` next to `output` (`.gguf-sleep-WHAT-PID-…`), removed when dropped.
fn scratch(output: &Path, what: &str) -> Result<tempfile::NamedTempFile> {
    let dir = patch::parent_dir(output);
    tempfile::Builder::new()
        .prefix(&format!(".gguf-sleep-{what}-{}-", std::process::id()))
        .suffix(".gguf")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))
}

/// The warm start's calibration: the first trajectory of each training question, at most `n`
/// of them spread evenly over the question list (so the self-questions at its end stay in),
/// as (questions, reply tokens).
fn init_material(train_set: &[Example], n: usize) -> (Vec<String>, Vec<Vec<i32>>) {
    let mut seen = std::collections::BTreeMap::new();
    for e in train_set {
        seen.entry(e.question_index).or_insert(e);
    }
    let firsts: Vec<&Example> = seen.into_values().collect();
    let n = n.clamp(1, firsts.len().max(1));
    (0..n)
        .filter_map(|i| firsts.get(i * firsts.len() / n))
        .map(|e| {
            let reply = e.tokens[e.tokens.len() - e.n..]
                .iter()
                .map(|&t| t as i32)
                .collect();
            (e.question.clone(), reply)
        })
        .unzip()
}

/// Write the adapters as a LoRA GGUF llama.cpp loads with `--lora`: `W.lora_a` `[in, r]`,
/// `W.lora_b` `[r, out]` (scaled by `strength`). `adapter.lora.alpha` is the rank when every
/// adapter has the same one (llama.cpp's scale `alpha / r` is then 1), else 0, which llama.cpp
/// reads as "no scaling" for every rank.
pub fn write_adapter(
    src: &gguf::GgufFile,
    lora: &LoraSet,
    strength: f32,
    out: &Path,
) -> Result<u64> {
    let arch = src
        .header()
        .architecture()
        .context("the model has no general.architecture")?;
    let mut tensors = Vec::new();
    let ranks: std::collections::BTreeSet<usize> =
        lora.adapters.values().map(|a| a.rank()).collect();
    for (name, ad) in &lora.adapters {
        let (r, n_in) = ad.a.as_tensor().dims2()?;
        let n_out = ad.b.dim(0)?;
        let a = ad.a.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let b = (ad.b.as_tensor() * f64::from(strength))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (suffix, v, dims) in [
            ("lora_a", a, vec![n_in as u64, r as u64]),
            ("lora_b", b, vec![r as u64, n_out as u64]),
        ] {
            tensors.push(gguf::NewTensor {
                name: format!("{name}.{suffix}"),
                dims,
                ggml_type: gguf::GgmlType::F32,
                data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                after: None,
            });
        }
    }
    if tensors.is_empty() {
        bail!("no adapters to write");
    }
    let alpha = if ranks.len() == 1 {
        *ranks.first().expect("one") as f32
    } else {
        0.0
    };
    let mut meta = gguf::Metadata::new();
    meta.set("general.architecture", arch);
    meta.set("general.type", "adapter");
    meta.set("adapter.type", "lora");
    meta.set("adapter.lora.alpha", alpha);
    gguf::write_new(meta, tensors, out, &gguf::WriteOptions::default())?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

/// `sleep.*` keys of a baked model, and its line in `sleep.history`.
fn provenance(src: &gguf::Header, system: &str, opts: &BakeOptions) -> patch::Provenance {
    let sha = Sha256::digest(system.as_bytes());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
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
        "method=bake {params} strength={} calibration={} prompt_sha256={hex} version={}",
        opts.strength,
        opts.questions.len(),
        env!("CARGO_PKG_VERSION"),
    );
    let mut keys = gguf::Metadata::new();
    keys.set("sleep.version", env!("CARGO_PKG_VERSION"));
    keys.set("sleep.method", "bake");
    keys.set("sleep.mode", "lora-kl");
    keys.set("sleep.strength", opts.strength);
    keys.set("sleep.prompt_sha256", hex);
    keys.set("sleep.calibration_size", opts.questions.len() as u32);
    keys.set(
        "sleep.layers",
        format!("0..{}", src.arch_u64("block_count").unwrap_or(0)),
    );
    keys.set(
        "sleep.edit_type",
        format!("{:?}", opts.edit_type).to_lowercase(),
    );
    keys.set("sleep.bake", params);
    patch::Provenance { history, keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(qi: usize, reply: &[u32]) -> Example {
        let mut tokens = vec![1, 2, 3];
        tokens.extend_from_slice(reply);
        Example {
            question: format!("q{qi}"),
            question_index: qi,
            first: tokens.len() - reply.len() - 1,
            n: reply.len(),
            tokens,
            ids: Vec::new(),
            logp: Vec::new(),
            tail: Vec::new(),
        }
    }

    #[test]
    fn init_material_takes_one_reply_per_question_spread_over_the_list() {
        // Two trajectories per question for questions 0..10 (validation ones already removed).
        let set: Vec<Example> = (0..10)
            .flat_map(|q| [example(q, &[100 + q as u32, 7]), example(q, &[200])])
            .collect();
        let (q, r) = init_material(&set, 4);
        assert_eq!(q, ["q0", "q2", "q5", "q7"]);
        assert_eq!(r, [vec![100, 7], vec![102, 7], vec![105, 7], vec![107, 7]]);
        let (q, r) = init_material(&set, 64);
        assert_eq!((q.len(), r.len()), (10, 10));
        assert_eq!(q.last().map(String::as_str), Some("q9"));
    }
}
