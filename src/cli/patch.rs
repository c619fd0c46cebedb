//! `gguf-sleep patch`: arguments and the closing summary.

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

use super::args::{calibration, EditTypeArg, PromptArgs, RoundingArg};
use super::progress::Phases;
use gguf_sleep::export::ollama;
use gguf_sleep::patch::{self, Emit, Lambda, Method, PatchOptions, PatchReport};
use gguf_sleep::text::Rendering;

/// `patch` arguments.
#[derive(Args)]
pub struct PatchArgs {
    /// the .gguf model to patch (left untouched unless --in-place)
    model: PathBuf,
    #[command(flatten, next_help_heading = "Input and output")]
    prompt: PromptArgs,
    /// where to write the patched model
    #[arg(short, long, required_unless_present_any = ["in_place", "ollama"], help_heading = "Input and output")]
    output: Option<PathBuf>,
    /// write the patched model and an Ollama Modelfile (no SYSTEM line) into DIR, and print
    /// the `ollama create` command
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "in_place"], help_heading = "Input and output")]
    ollama: Option<PathBuf>,
    /// method: down (output-side least squares, default), matrix (thought matrices on the MLP
    /// input), vector (thought vector bias after attention), cvec (vector at each block's
    /// output, exportable as a control vector), sleep (value-bias correction)
    #[arg(long, value_enum, default_value_t = MethodArg::Down, help_heading = "Method")]
    method: MethodArg,
    /// scale of every edit; 0 writes the model unchanged
    #[arg(long, default_value_t = 1.0, help_heading = "Method")]
    strength: f32,
    /// layers to edit, e.g. 4..30 (default: all)
    #[arg(long, value_name = "RANGE", help_heading = "Method")]
    layers: Option<String>,
    /// calibration questions, one per line (default: 134 built-in general questions, then 25
    /// about the assistant itself, three times)
    #[arg(long, value_name = "FILE", help_heading = "Calibration")]
    calib: Option<PathBuf>,
    /// use only the first N calibration questions
    #[arg(long, value_name = "N", help_heading = "Calibration")]
    calib_size: Option<usize>,
    /// also ask up to N questions built from the prompt's own words ("Tell me about your
    /// cat.", "What can you tell me about Miso?"); 0 for none [default: 48]
    #[arg(long, value_name = "N", help_heading = "Calibration")]
    prompt_questions: Option<usize>,
    /// fit layer by layer, each on activations recomputed with the earlier layers patched
    /// (the default for down, matrix and vector)
    #[arg(long, conflicts_with = "parallel", help_heading = "Method")]
    sequential: bool,
    /// fit every layer in one pass on the unpatched model (faster, much less faithful)
    #[arg(long, help_heading = "Method")]
    parallel: bool,
    /// ridge λ relative to the mean feature power: a number, or auto (chosen per layer on a
    /// validation split) [default: 0.1]
    #[arg(long, value_name = "auto|λ", help_heading = "Method")]
    ridge: Option<String>,
    /// storage of edited weight matrices: same (requantize to the original type), q8_0, f16, f32
    #[arg(long, value_enum, default_value_t = EditTypeArg::Same, help_heading = "Storage")]
    edit_type: EditTypeArg,
    /// how edited matrices are rounded to a quantized type: output (each weight rounded up or
    /// down so that the layer's output on the calibration inputs stays closest to the edit's;
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) or nearest (each weight to its nearest
    /// grid value)
    #[arg(long, value_enum, default_value_t = RoundingArg::Output, help_heading = "Storage")]
    rounding: RoundingArg,
    /// sleep: α for every layer and head (default: measured from attention)
    #[arg(long, help_heading = "Method")]
    alpha: Option<f64>,
    /// sleep: β, the prompt's strength in eq. 10
    #[arg(long, default_value_t = 1.0, help_heading = "Method")]
    beta: f64,
    /// renderings of a turn without the user's own system prompt that the calibration
    /// conversations cycle through: template (the model's template with no system message),
    /// empty (an empty system turn), generic ("You are a helpful assistant.") [default:
    /// template]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        help_heading = "Calibration"
    )]
    renderings: Option<Vec<Rendering>>,
    /// reply tokens generated per calibration question
    #[arg(long, default_value_t = 64, help_heading = "Calibration")]
    max_tokens: usize,
    /// how many times a row that predicts a word of the prompt in a reply (one the question
    /// does not contain: a name, a place, a number) counts in the fit [default: 1]
    #[arg(long, value_name = "W", help_heading = "Calibration")]
    content_weight: Option<f32>,
    /// also fit N paragraphs of built-in plain text (no chat) with the unchanged model as the
    /// target, so that text outside a conversation stays as it was; 0 = none [default: all 20]
    #[arg(long, value_name = "N", help_heading = "Calibration")]
    anchors: Option<usize>,
    /// write over the input model
    #[arg(long, help_heading = "Input and output")]
    in_place: bool,
    /// what to write: merged (the patched model), lora (an adapter llama.cpp loads with
    /// --lora; down or matrix), cvec (a control vector for --control-vector; method cvec)
    #[arg(long, value_enum, default_value_t = EmitArg::Merged, help_heading = "Input and output")]
    emit: EmitArg,
    /// down: fit no ffn_down.bias, only the weight matrix (what --emit lora fits)
    #[arg(long, help_heading = "Method")]
    no_bias: bool,
    /// --emit lora: most rank per matrix (the SVD is truncated; exact at min(rows, cols))
    #[arg(long, default_value_t = 64, help_heading = "Method")]
    lora_rank: usize,
    /// print the summary as JSON on stdout
    #[arg(long, help_heading = "Input and output")]
    json: bool,
    /// also time a plain prefill of the calibration tokens (for benchmarks)
    #[arg(long, hide = true)]
    measure_prefill: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Down,
    Matrix,
    Vector,
    Cvec,
    Sleep,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmitArg {
    Merged,
    Lora,
    Cvec,
}

fn parse_layers(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--layers takes START..END (e.g. 4..30), not '{s}'");
    let (a, b) = s
        .split_once("..")
        .or_else(|| s.split_once('-'))
        .ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn parse_ridge(s: &str) -> Result<Lambda> {
    Ok(match s {
        "auto" => Lambda::Auto,
        s => {
            Lambda::Fixed(s.parse().map_err(|_| {
                anyhow::anyhow!("--ridge takes auto or a positive number, not '{s}'")
            })?)
        }
    })
}

/// Where the output goes: `-o`, the input (`--in-place`) or a file in the `--ollama` directory.
fn output_path(a: &PatchArgs) -> Result<PathBuf> {
    Ok(match (&a.output, a.in_place, &a.ollama) {
        (Some(o), false, None) => o.clone(),
        (None, true, None) => a.model.clone(),
        (None, false, Some(dir)) => {
            let suffix = match a.emit {
                EmitArg::Merged => "sleep",
                EmitArg::Lora => "sleep-lora",
                EmitArg::Cvec => {
                    bail!("Ollama loads no control vectors: use --emit merged or lora")
                }
            };
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the directory {}", dir.display()))?;
            dir.join(format!("{}-{suffix}.gguf", ollama::file_stem(&a.model)))
        }
        (None, false, None) => bail!("give the output file with -o OUT"),
        _ => bail!("give one of -o OUT, --in-place or --ollama DIR"),
    })
}

/// Run `patch`.
pub fn run(a: PatchArgs) -> Result<()> {
    let system = a.prompt.text()?;
    let method = match a.method {
        MethodArg::Down => Method::Down,
        MethodArg::Matrix => Method::Matrix,
        MethodArg::Vector => Method::Vector,
        MethodArg::Cvec => Method::Cvec,
        MethodArg::Sleep => Method::Sleep,
    };
    let defaults = PatchOptions::default();
    let opts = PatchOptions {
        method,
        // sleep is closed-form: parallel unless --sequential asks (and is refused)
        sequential: a.sequential || !a.parallel && method != Method::Sleep,
        strength: a.strength,
        layers: a.layers.as_deref().map(parse_layers).transpose()?,
        questions: calibration(&a.calib, a.calib_size)?,
        prompt_questions: a.prompt_questions.unwrap_or(defaults.prompt_questions),
        lambda: a
            .ridge
            .as_deref()
            .map(parse_ridge)
            .transpose()?
            .unwrap_or(defaults.lambda),
        edit_type: a.edit_type.into(),
        output_rounding: matches!(a.rounding, RoundingArg::Output),
        alpha: a.alpha,
        beta: a.beta,
        max_tokens: a.max_tokens,
        in_place: a.in_place,
        measure_prefill: a.measure_prefill,
        emit: match a.emit {
            EmitArg::Merged => Emit::Merged,
            EmitArg::Lora => Emit::Lora(a.lora_rank),
            EmitArg::Cvec => Emit::Cvec,
        },
        bias: !a.no_bias,
        renderings: a.renderings.clone().unwrap_or(defaults.renderings),
        content_weight: a.content_weight.unwrap_or(defaults.content_weight),
        anchors: a.anchors.unwrap_or(defaults.anchors),
    };
    opts.validate()?;
    let output = output_path(&a)?;
    let mut bars = Phases::default();
    let report = patch::patch(
        &a.model,
        &output,
        &system,
        &opts,
        &mut |phase, done, total| bars.update(phase, done, total, None),
    )?;
    bars.finish();
    let ollama = match &a.ollama {
        Some(dir) => Some(ollama::write_modelfile(
            &a.model,
            dir,
            &output,
            a.emit == EmitArg::Lora,
        )?),
        None => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some((modelfile, create)) = &ollama {
            v["ollama"] = serde_json::json!({ "modelfile": modelfile, "create": create });
        }
        println!("{v}");
    } else {
        summary(&report);
        if let Some((modelfile, create)) = &ollama {
            println!(
                "ollama: wrote {}; import with:\n  {create}",
                modelfile.display()
            );
        }
    }
    Ok(())
}
fn summary(r: &PatchReport) {
    match &r.export {
        None => println!(
            "patched {} ({} bytes): method {} ({}), strength {}",
            r.output.display(),
            r.bytes,
            r.method,
            r.mode,
            r.strength
        ),
        Some(e) => {
            println!(
                "wrote {} {} ({} bytes, {} entries) from method {} ({}), strength {}",
                e.kind,
                r.output.display(),
                r.bytes,
                e.entries,
                r.method,
                r.mode,
                r.strength
            );
            if let (Some(rank), Some(en)) = (e.rank, e.min_retained_energy) {
                println!(
                    "LoRA rank {rank}: keeps at least {:.2}% of every change's energy",
                    100.0 * en
                );
            }
        }
    }
    println!(
        "calibration: {} questions, {} aligned tokens per layer, {} of them before a prompt word (weight {}), {} of plain text",
        r.questions, r.tokens, r.content_rows, r.content_weight, r.anchor_tokens
    );
    let lambdas: Vec<f64> = r.layers.iter().filter_map(|l| l.lambda).collect();
    if !lambdas.is_empty() {
        let errs: Vec<f64> = r.layers.iter().filter_map(|l| l.val_rel_error).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "fit: λ {:.0e}..{:.0e}, mean validation error {:.3} of the uncorrected difference",
            lambdas.iter().cloned().fold(f64::INFINITY, f64::min),
            lambdas.iter().cloned().fold(0.0, f64::max),
            mean(&errs)
        );
    }
    println!("{} tensors edited:", r.tensors.len());
    for t in &r.tensors {
        println!(
            "  {:<28} {:<5} ‖Δ‖ {:>9.4}  ‖W‖ {:>9.3}  stored/Δ {:>5.2}  cos {:>5.2}",
            t.name, t.ggml_type, t.delta_norm, t.weight_norm, t.stored_ratio, t.stored_cos
        );
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, s)| format!("{p} {s:.1}s"))
        .collect();
    println!("time: {}", phases.join(", "));
    if let Some(p) = r.prefill_s {
        println!("plain prefill of the same tokens: {p:.1}s");
    }
}
