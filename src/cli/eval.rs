//! `gguf-sleep eval`: the fidelity measure, printed as text or JSON.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use super::args::{lines_or, PromptArgs};
use super::progress::Phases;
use gguf_sleep::engine::Model;
use gguf_sleep::eval::{self, EvalOptions, Figures};
use gguf_sleep::text;

/// `eval` arguments.
#[derive(Args)]
pub struct EvalArgs {
    /// the original model (used with the prompt as the teacher)
    #[arg(long, help_heading = "Models and prompt")]
    base: PathBuf,
    /// the model to score (used with no prompt)
    #[arg(long, help_heading = "Models and prompt")]
    candidate: PathBuf,
    #[command(flatten, next_help_heading = "Models and prompt")]
    prompt: PromptArgs,
    /// held-out questions, one per line (default: the built-in set)
    #[arg(long, value_name = "FILE", help_heading = "Measure")]
    questions: Option<PathBuf>,
    /// reply tokens per question
    #[arg(long, default_value_t = 64, help_heading = "Measure")]
    max_tokens: usize,
    /// skip the neutral-text locality check
    #[arg(long, help_heading = "Measure")]
    no_locality: bool,
    /// apply this LoRA adapter (e.g. from `bake --emit lora`) to the candidate, through llama.cpp
    #[arg(long, value_name = "ADAPTER", help_heading = "Models and prompt")]
    lora: Option<PathBuf>,
    /// scale of the --lora adapter (llama.cpp's --lora-scaled)
    #[arg(
        long,
        default_value_t = 1.0,
        requires = "lora",
        help_heading = "Models and prompt"
    )]
    lora_scale: f32,
    /// give the candidate the system prompt too: how a baked model behaves when prompted again
    #[arg(long, help_heading = "Models and prompt")]
    reprompt: bool,
    /// print JSON on stdout
    #[arg(long, help_heading = "Measure")]
    json: bool,
}

/// Run `eval`.
pub fn run(a: EvalArgs) -> Result<()> {
    let system = a.prompt.text()?;
    let questions = lines_or(&a.questions, "questions", || text::lines(text::HELDOUT))?;
    let base = Model::load(&a.base)?;
    let cand = Model::load(&a.candidate)?;
    let opts = EvalOptions {
        max_tokens: a.max_tokens,
        locality: !a.no_locality,
        lora: a.lora.clone(),
        lora_scale: a.lora_scale,
        reprompt: a.reprompt,
    };
    let mut bars = Phases::default();
    let r = eval::eval(
        &base,
        &cand,
        &system,
        &questions,
        &opts,
        |phase, done, total| bars.update(phase, done, total, None),
    )?;
    bars.finish();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("questions       {}", r.questions);
    print_figures("reply tokens", &r.all, "");
    match &r.content {
        Some(c) => print_figures(
            "content tokens",
            c,
            "  (reply tokens spelling a word of the prompt)",
        ),
        None => println!("content tokens  0  (no reply spelled a word of the prompt)"),
    }
    if let Some(c) = &r.content_first {
        print_figures("first pieces", c, "  (the first token of each such word)");
    }
    if let Some(l) = r.locality_kl {
        println!(
            "locality_kl     {:.5}  ({} neutral tokens)",
            l, r.locality_tokens
        );
    }
    Ok(())
}

fn print_figures(what: &str, f: &Figures, note: &str) {
    println!("{what:<15} {}{note}", f.tokens);
    println!("kl_base         {:.4}", f.kl_base);
    println!("kl_candidate    {:.4}", f.kl_candidate);
    println!("recovery        {:.3}", f.recovery);
    println!("top1_base       {:.3}", f.top1_base);
    println!("top1_candidate  {:.3}", f.top1_candidate);
}
