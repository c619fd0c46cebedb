//! `gguf-sleep bake`: arguments, progress and the closing summary.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

use super::args::{calibration, EditTypeArg, PromptArgs, RoundingArg};
use super::progress::Phases;
use gguf_sleep::bake::options::default_qat_from;
use gguf_sleep::bake::{
    self, BakeEmit, BakeOptions, BakeReport, Init, Merge, Targets, TeacherOptions, TrainOptions,
};

/// `bake` arguments.
#[derive(Args)]
pub struct BakeArgs {
    /// the .gguf model (left untouched)
    model: PathBuf,
    #[command(flatten, next_help_heading = "Input and output")]
    prompt: PromptArgs,
    /// where to write the baked model (or the adapter, with --emit lora)
    #[arg(short, long, help_heading = "Input and output")]
    output: PathBuf,
    /// optimizer steps [default: 32 with the warm start, 96 from the unmodified model]
    #[arg(long, help_heading = "Training")]
    steps: Option<usize>,
    /// adapter rank
    #[arg(long, default_value_t = 8, help_heading = "Training")]
    rank: usize,
    /// Adam learning rate (decays linearly to a tenth)
    #[arg(long, default_value_t = 2e-3, help_heading = "Training")]
    lr: f64,
    /// trajectories per step [default: 8 with the warm start, 4 from the unmodified model]
    #[arg(long, help_heading = "Training")]
    batch: Option<usize>,
    /// trajectories per forward and backward pass (gradients summed over a step's passes):
    /// bounds activation memory, learns the same [default: from the model's size]
    #[arg(long, help_heading = "Training")]
    micro_batch: Option<usize>,
    /// recompute each layer's activations in the backward pass: one layer's held instead of
    /// every layer's, for a second forward pass's time [default: where the activation budget
    /// holds fewer than two trajectories through every layer: about 0.5B and up]
    #[arg(long, conflicts_with = "no_recompute", help_heading = "Training")]
    recompute: bool,
    /// keep every layer's activations for the backward pass
    #[arg(long, help_heading = "Training")]
    no_recompute: bool,
    /// replies sampled from the prompted model per calibration question
    #[arg(long, default_value_t = 1, help_heading = "Calibration and teacher")]
    trajectories: usize,
    /// sampling temperature of the teacher's replies
    #[arg(long, default_value_t = 0.8, help_heading = "Calibration and teacher")]
    temperature: f32,
    /// projections that get adapters: attn (q, k, v, output), mlp (gate, up, down), all
    #[arg(long, value_enum, default_value_t = TargetsArg::All, help_heading = "Training")]
    targets: TargetsArg,
    /// start from the unmodified model, or from the training-free patch (its default method,
    /// merged and requantized), training adapters on top of the patched weights [default: patch
    /// for a merged output at full strength; none with --emit lora, --strength, --save-adapter
    /// or --merge refit, which need an adapter trained from the unmodified model]
    #[arg(long, value_enum, help_heading = "Calibration and teacher")]
    init: Option<InitArg>,
    /// calibration questions the warm start's (or --merge refit's) patch fits on (spread over
    /// the training questions, with the teacher's replies)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 128,
        help_heading = "Calibration and teacher"
    )]
    init_calib_size: usize,
    /// scale of the trained adapter; 0 writes the model unchanged
    #[arg(long, default_value_t = 1.0, help_heading = "Training")]
    strength: f32,
    /// what to write: merged (the baked model, requantized) or lora (an adapter for --lora)
    #[arg(long, value_enum, default_value_t = EmitArg::Merged, help_heading = "Input and output")]
    emit: EmitArg,
    /// how a merged output takes in the trained adapter: requantize (W + B·A of every adapted
    /// matrix in its own type, with quantization-aware training) or refit (the adapter, trained
    /// in full precision, becomes the teacher of `patch`'s sequential `down` fit, which is
    /// stored in the file's own types; implies --init none)
    #[arg(long, value_enum, default_value_t = MergeArg::Requantize, help_heading = "Storage")]
    merge: MergeArg,
    /// also train a change to the biases of attn_output and ffn_down, stored exactly (F32) in
    /// a merged output; an adapter file cannot carry them
    #[arg(long, conflicts_with = "save_adapter", help_heading = "Training")]
    bias: bool,
    /// storage of merged matrices: same (requantize to the original type), q8_0, f16, f32
    #[arg(long, value_enum, default_value_t = EditTypeArg::Same, help_heading = "Storage")]
    edit_type: EditTypeArg,
    /// how the trained adapters are rounded when merged into a quantized type: nearest (what
    /// quantization-aware training trains against) or output (each weight up or down so that the
    /// layer's output on the trajectories stays closest; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K,
    /// Q6_K); the warm start's patch always rounds to keep each layer's output, as `patch` does
    /// by default
    #[arg(long, value_enum, default_value_t = RoundingArg::Nearest, help_heading = "Storage")]
    rounding: RoundingArg,
    /// calibration questions, one per line (default: the built-in set, as for patch)
    #[arg(long, value_name = "FILE", help_heading = "Calibration and teacher")]
    calib: Option<PathBuf>,
    /// use only the first N calibration questions
    #[arg(long, value_name = "N", help_heading = "Calibration and teacher")]
    calib_size: Option<usize>,
    /// most reply tokens per trajectory
    #[arg(long, default_value_t = 64, help_heading = "Calibration and teacher")]
    max_tokens: usize,
    /// teacher log-probabilities kept per position (the rest is one tail bucket)
    #[arg(long, default_value_t = 256, help_heading = "Training")]
    top_k: usize,
    /// validate every N steps [default: 8 with the warm start, 16 from the unmodified model]
    #[arg(long, help_heading = "Training")]
    eval_every: Option<usize>,
    /// quantization-aware training from this step on (merged output): the student runs the
    /// adapted matrices requantized as they will be stored [default: two thirds of --steps]
    #[arg(
        long,
        value_name = "STEP",
        conflicts_with = "no_qat",
        help_heading = "Storage"
    )]
    qat_from: Option<usize>,
    /// train in full precision to the end (the merged output is requantized only when written)
    #[arg(long, help_heading = "Storage")]
    no_qat: bool,
    /// refresh the requantized matrices every N steps during quantization-aware training
    #[arg(long, default_value_t = 4, help_heading = "Storage")]
    qat_every: usize,
    /// seed for sampling, initialisation and shuffling
    #[arg(short, long, default_value_t = 42, help_heading = "Training")]
    seed: u64,
    /// also write the adapter to this file, as trained in full precision (just before
    /// quantization-aware training starts)
    #[arg(long, value_name = "FILE", help_heading = "Input and output")]
    save_adapter: Option<PathBuf>,
    /// print the summary as JSON on stdout
    #[arg(long, help_heading = "Input and output")]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MergeArg {
    Requantize,
    Refit,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetsArg {
    Attn,
    Mlp,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InitArg {
    None,
    Patch,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmitArg {
    Merged,
    Lora,
}

/// Run `bake`.
pub fn run(a: BakeArgs) -> Result<()> {
    let system = a.prompt.text()?;
    let emit = match a.emit {
        EmitArg::Merged => BakeEmit::Merged,
        EmitArg::Lora => BakeEmit::Lora,
    };
    let merge = match a.merge {
        MergeArg::Requantize => Merge::Requantize,
        MergeArg::Refit => Merge::Refit,
    };
    let init = match a.init {
        Some(InitArg::None) => Init::None,
        Some(InitArg::Patch) => Init::Patch,
        None => Init::default_for(emit, merge, a.strength, a.save_adapter.is_some()),
    };
    let d = init.train_defaults();
    let steps = a.steps.unwrap_or(d.steps);
    let opts = BakeOptions {
        questions: calibration(&a.calib, a.calib_size)?,
        teacher: TeacherOptions {
            per_question: a.trajectories,
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            seed: a.seed,
            top_k: a.top_k,
        },
        train: TrainOptions {
            steps,
            batch: a.batch.unwrap_or(d.batch),
            micro_batch: a.micro_batch,
            recompute: match (a.recompute, a.no_recompute) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            lr: a.lr,
            eval_every: a.eval_every.unwrap_or(d.eval_every),
            seed: a.seed,
            qat_from: match (a.no_qat, a.qat_from) {
                (true, _) => None,
                (false, f) => Some(f.unwrap_or_else(|| default_qat_from(steps))),
            },
            qat_every: a.qat_every,
        },
        rank: a.rank,
        targets: match a.targets {
            TargetsArg::Attn => Targets::Attn,
            TargetsArg::Mlp => Targets::Mlp,
            TargetsArg::All => Targets::All,
        },
        init,
        init_questions: a.init_calib_size,
        strength: a.strength,
        emit,
        merge,
        bias: a.bias,
        edit_type: a.edit_type.into(),
        output_rounding: matches!(a.rounding, RoundingArg::Output),
        save_adapter: a.save_adapter.clone(),
        ..BakeOptions::default()
    };
    let mut bars = Phases::default();
    let report = bake::bake(
        &a.model,
        &a.output,
        &system,
        &opts,
        &mut |phase, done, total, loss| bars.update(phase, done, total, loss),
    )?;
    bars.finish();
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        summary(&report, a.emit == EmitArg::Lora);
    }
    Ok(())
}

fn summary(r: &BakeReport, adapter: bool) {
    println!(
        "{} {} ({} bytes)",
        if adapter { "wrote adapter" } else { "baked" },
        r.output.display(),
        r.bytes
    );
    println!(
        "teacher: {} questions, {} trajectories ({} reply tokens) to train on, {} to validate; \
         mean tail mass beyond top-k {:.4}",
        r.questions, r.train_trajectories, r.train_tokens, r.val_trajectories, r.mean_tail_mass
    );
    if let Some(e) = r.init_recovery {
        println!("warm start: the patched model recovers {e:.3} on validation before training");
    }
    println!(
        "{} trainable parameters, {} trajectories a pass{}; validation KL of the unmodified \
         model {:.4}",
        r.params,
        r.micro_batch,
        if r.recompute {
            " (layers recomputed)"
        } else {
            ""
        },
        r.val_kl_base
    );
    println!("  step   elapsed   train KL   val KL   val recovery");
    for p in &r.curve {
        println!(
            "  {:>4}  {:>7.1}s   {:>8.4}   {:>6.4}   {:>6.3}",
            p.step, p.elapsed_s, p.train_kl, p.val_kl, p.val_recovery
        );
    }
    match r.steps_to_0_9 {
        Some(s) => println!("validation recovery reached 0.9 at step {s}"),
        None => println!("validation recovery did not reach 0.9"),
    }
    if !r.tensors.is_empty() {
        let mean_cos = r.tensors.iter().map(|t| t.stored_cos).sum::<f64>() / r.tensors.len() as f64;
        println!(
            "{} tensors requantized; mean cosine of the stored change against the adapter's {:.2}",
            r.tensors.len(),
            mean_cos
        );
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, s)| format!("{p} {s:.1}s"))
        .collect();
    println!("time: {}", phases.join(", "));
}
