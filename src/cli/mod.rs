//! The commands, one file each, over what they share: argument readers ([`args`]) and progress
//! bars ([`progress`]). A command parses, calls the library and prints; library errors name
//! option fields, which [`one_line`] turns into this command line's flags.

pub mod args;
pub mod bake;
pub mod eval;
pub mod files;
pub mod generate;
pub mod patch;
pub mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Bake a system prompt into the weights of a llama.cpp GGUF model, without training.
#[derive(Parser)]
#[command(name = "gguf-sleep", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// threads for llama.cpp compute [default: GGUF_SLEEP_THREADS, else all cores]
    #[arg(
        short = 't',
        long,
        global = true,
        value_name = "N",
        help_heading = "Runtime"
    )]
    threads: Option<usize>,
    /// layers to offload to the GPU in a CUDA or Metal build (-1: all; also -ngl, as in
    /// llama.cpp) [default: all there, none on the CPU]
    #[arg(
        long = "n-gpu-layers",
        visible_alias = "gpu-layers",
        global = true,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Runtime"
    )]
    n_gpu_layers: Option<i32>,
    /// tokens one conversation may use [default: the model's training context]
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "N",
        help_heading = "Runtime"
    )]
    ctx_size: Option<usize>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a GGUF file: architecture, sizes, tensor types, chat template, sleep.* provenance.
    Inspect(files::InspectArgs),
    /// Rewrite a GGUF through the streamed writer with no edits (the output is byte-identical).
    Rewrite(files::RewriteArgs),
    /// Compare two GGUF files: metadata added/changed/removed, and per tensor identical or the
    /// relative size of its change (dequantized).
    Diff(files::DiffArgs),
    /// Generate replies (greedy unless --temperature is given) through the model's chat template.
    Generate(generate::GenerateArgs),
    /// Measure how closely CANDIDATE without a prompt follows BASE with it (KL recovery).
    Eval(eval::EvalArgs),
    /// Bake a system prompt into the weights: the output, used with no system prompt, behaves
    /// like the input used with it.
    Patch(patch::PatchArgs),
    /// Prompt Baking: train a LoRA adapter so that the model without the prompt matches the
    /// model with it (KL on its own sampled replies), then merge it or write it as an adapter.
    Bake(bake::BakeArgs),
}

/// The command line's arguments with llama.cpp's multi-letter short flag `-ngl` spelled as
/// its long form, which the parser knows.
pub fn args() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::args_os().map(|a| {
        if a == "-ngl" {
            "--n-gpu-layers".into()
        } else {
            a
        }
    })
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        gguf_sleep::engine::set_threads(n);
    }
    if let Some(n) = cli.n_gpu_layers {
        gguf_sleep::engine::set_gpu_layers(n);
    }
    if let Some(n) = cli.ctx_size {
        gguf_sleep::engine::set_ctx_size(n);
    }
    match cli.cmd {
        Cmd::Inspect(a) => files::inspect(a),
        Cmd::Rewrite(a) => files::rewrite(a),
        Cmd::Diff(a) => files::diff(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Patch(a) => patch::run(a),
        Cmd::Bake(a) => bake::run(a),
    }
}

/// The library names option fields in backticks; each is the flag that sets it here.
const FLAGS: [(&str, &str); 24] = [
    ("`renderings`", "--renderings"),
    ("`ctx_size`", "-c/--ctx-size"),
    ("`max_tokens`", "--max-tokens"),
    ("`rank`", "--rank"),
    ("`batch`", "--batch"),
    ("`lr`", "--lr"),
    ("`top_k`", "--top-k"),
    ("`per_question`", "--trajectories"),
    ("`init_questions`", "--init-calib-size"),
    ("`init`", "--init"),
    ("`emit`", "--emit"),
    ("`merge`", "--merge"),
    ("`bias`", "--bias"),
    ("`strength`", "--strength"),
    ("`save_adapter`", "--save-adapter"),
    ("`layers`", "--layers"),
    ("`lora_rank`", "--lora-rank"),
    ("`method`", "--method"),
    ("`sequential`", "--sequential"),
    ("`in_place`", "--in-place"),
    ("`lambda`", "--ridge"),
    ("`questions`", "--calib"),
    ("`output`", "-o"),
    ("`edit_type`", "--edit-type"),
];

/// A usage error as one line: clap's message without the usage and help hints, its lines
/// joined.
pub fn usage_error_line(text: &str) -> String {
    text.lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error and its causes on one line, with option fields named by their flags.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = format!("{e:#}").replace('\n', " ");
    for (field, flag) in FLAGS {
        msg = msg.replace(field, flag);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fold_into_one_line_without_the_hints() {
        let text = "error: the following required arguments were not provided:\n  --prompt <PROMPT>\n\nUsage: gguf-sleep patch <MODEL>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(text),
            "error: the following required arguments were not provided: --prompt <PROMPT>"
        );
    }

    #[test]
    fn library_fields_are_named_as_flags() {
        let e = anyhow::anyhow!("`init_questions` must be at least 1; `init` patch");
        assert_eq!(
            one_line(&e),
            "--init-calib-size must be at least 1; --init patch"
        );
    }
}
