//! The `gguf-sleep` command line: parses arguments, calls the library, prints results.

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;

use gguf_sleep::{chat::ChatFormat, convo, engine::Model, eval, generate};

/// Bake a system prompt into the weights of a llama.cpp GGUF model, without training.
#[derive(Parser)]
#[command(name = "gguf-sleep", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a GGUF file: architecture, sizes, tensor types, chat template, sleep.* provenance.
    Inspect {
        /// the .gguf file
        file: PathBuf,
        /// list every tensor
        #[arg(long)]
        tensors: bool,
        /// print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a GGUF through the streamed writer with no edits (the output is byte-identical).
    Rewrite {
        /// the .gguf file to read
        file: PathBuf,
        /// where to write
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Compare two GGUF files: metadata added/changed/removed, and per tensor identical or the
    /// relative size of its change (dequantized).
    Diff {
        /// the first file (e.g. the original model)
        a: PathBuf,
        /// the second file (e.g. the patched model)
        b: PathBuf,
        /// print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Generate replies (greedy unless --temperature is given) through the model's chat template.
    Generate(GenerateArgs),
    /// Measure how closely CANDIDATE without a prompt follows BASE with it (KL recovery).
    Eval(EvalArgs),
    /// Bake a system prompt into the weights: the output, used with no system prompt, behaves
    /// like the input used with it.
    Patch(cli::patch::PatchArgs),
    /// Prompt Baking: train a LoRA adapter so that the model without the prompt matches the
    /// model with it (KL on its own sampled replies), then merge it or write it as an adapter.
    Bake(cli::bake::BakeArgs),
}

#[derive(Args)]
struct PromptArg {
    /// the system prompt
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// read the system prompt from a file
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    /// the .gguf model
    model: PathBuf,
    /// system prompt (none by default: the template's own default applies, if it has one)
    #[arg(long, conflicts_with = "system_file")]
    system: Option<String>,
    /// read the system prompt from a file
    #[arg(long, value_name = "FILE")]
    system_file: Option<PathBuf>,
    /// the user's message
    #[arg(
        long,
        conflicts_with = "user_file",
        required_unless_present = "user_file"
    )]
    user: Option<String>,
    /// one user message per line
    #[arg(long, value_name = "FILE")]
    user_file: Option<PathBuf>,
    /// most tokens per reply
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// sampling temperature (0 = greedy)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// sampling seed
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// apply this LoRA adapter GGUF (as written by `bake --emit lora` or `patch --emit lora`)
    #[arg(long, value_name = "ADAPTER")]
    lora: Option<PathBuf>,
    /// scale of the adapter (0 = the model alone)
    #[arg(long, default_value_t = 1.0, requires = "lora")]
    lora_scale: f32,
    /// one JSON object per line: {"user": …, "reply": …}
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// the original model (used with the prompt as the teacher)
    #[arg(long)]
    base: PathBuf,
    /// the model to score (used with no prompt)
    #[arg(long)]
    candidate: PathBuf,
    #[command(flatten)]
    prompt: PromptArg,
    /// held-out questions, one per line (default: the built-in set)
    #[arg(long, value_name = "FILE")]
    questions: Option<PathBuf>,
    /// reply tokens per question
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// skip the neutral-text locality check
    #[arg(long)]
    no_locality: bool,
    /// apply this LoRA adapter (e.g. from `bake --emit lora`) to the candidate, through llama.cpp
    #[arg(long, value_name = "ADAPTER")]
    lora: Option<PathBuf>,
    /// scale of the --lora adapter (llama.cpp's --lora-scaled)
    #[arg(long, default_value_t = 1.0, requires = "lora")]
    lora_scale: f32,
    /// give the candidate the system prompt too: how a baked model behaves when prompted again
    #[arg(long)]
    reprompt: bool,
    /// print JSON on stdout
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect {
            file,
            tensors,
            json,
        } => {
            let report = gguf_sleep::inspect::inspect(&file, tensors)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Cmd::Rewrite { file, output } => {
            let src = gguf::GgufFile::open(&file)?;
            let report = gguf::write(
                &src,
                &gguf::Edits::default(),
                &output,
                &gguf::WriteOptions::default(),
            )?;
            eprintln!("wrote {} ({} bytes)", output.display(), report.bytes);
        }
        Cmd::Diff { a, b, json } => {
            let report = gguf_sleep::diff::diff(&a, &b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Cmd::Generate(a) => generate_cmd(a)?,
        Cmd::Eval(a) => eval_cmd(a)?,
        Cmd::Patch(a) => cli::patch::run(a)?,
        Cmd::Bake(a) => cli::bake::run(a)?,
    }
    Ok(())
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))
}

fn prompt_text(p: &PromptArg) -> Result<String> {
    let text = match (&p.prompt, &p.prompt_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_text(f, "prompt")?,
        (None, None) => {
            anyhow::bail!("give the system prompt with --prompt TEXT or --prompt-file FILE")
        }
    };
    if text.trim().is_empty() {
        anyhow::bail!("the system prompt is empty");
    }
    Ok(text.trim_end_matches('\n').to_string())
}

fn bar(len: usize, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let users = match (&a.user, &a.user_file) {
        (Some(u), _) => vec![u.clone()],
        (None, Some(f)) => eval::lines(&read_text(f, "user")?),
        _ => anyhow::bail!("give the user message with --user TEXT or --user-file FILE"),
    };
    let system = match (&a.system, &a.system_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => Some(read_text(f, "system")?.trim_end_matches('\n').to_string()),
        _ => None,
    };
    let model = Model::load(&a.model)?;
    let fmt = ChatFormat::for_model(&model)?;
    let prompts = users
        .iter()
        .map(|u| convo::prompt_tokens(&model, &fmt, system.as_deref(), u))
        .collect::<Result<Vec<_>>>()?;
    let opts = generate::GenOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        seed: a.seed,
        ..Default::default()
    };
    let pb = bar(users.len(), "generate");
    let replies = match &a.lora {
        Some(l) => {
            generate::generate_adapted(&model, &fmt, &prompts, &opts, l, a.lora_scale, || {
                pb.inc(1)
            })?
        }
        None => generate::generate(&model, &fmt, &prompts, &opts, || pb.inc(1))?,
    };
    pb.finish_and_clear();
    for (u, r) in users.iter().zip(replies) {
        let text = model.detokenize(&r);
        let text = fmt.trim_reply(&text).trim().to_string();
        if a.json {
            println!("{}", serde_json::json!({ "user": u, "reply": text }));
        } else {
            println!("> {u}\n{text}\n");
        }
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let system = prompt_text(&a.prompt)?;
    let questions = match &a.questions {
        Some(f) => eval::lines(&read_text(f, "questions")?),
        None => eval::lines(eval::HELDOUT),
    };
    let base = Model::load(&a.base)?;
    let cand = Model::load(&a.candidate)?;
    let pb = bar(questions.len(), "replies");
    let opts = eval::EvalOptions {
        max_tokens: a.max_tokens,
        locality: !a.no_locality,
        lora: a.lora.clone(),
        lora_scale: a.lora_scale,
        reprompt: a.reprompt,
    };
    let r = eval::eval(
        &base,
        &cand,
        &system,
        &questions,
        &opts,
        |phase, done, _| {
            if pb.message() != phase {
                pb.set_message(phase.to_string());
                pb.set_position(0);
            }
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("questions       {}", r.questions);
        println!("reply tokens    {}", r.tokens);
        println!("kl_base         {:.4}", r.kl_base);
        println!("kl_candidate    {:.4}", r.kl_candidate);
        println!("recovery        {:.3}", r.recovery);
        println!("top1_base       {:.3}", r.top1_base);
        println!("top1_candidate  {:.3}", r.top1_candidate);
        if let Some(l) = r.locality_kl {
            println!(
                "locality_kl     {:.5}  ({} neutral tokens)",
                l, r.locality_tokens
            );
        }
    }
    Ok(())
}
