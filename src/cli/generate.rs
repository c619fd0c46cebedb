//! `gguf-sleep generate`: replies through the model's chat template.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use super::args::{lines_or, text_or_file};
use super::progress::bar;
use gguf_sleep::engine::Model;
use gguf_sleep::generate::{self, GenOptions};
use gguf_sleep::text::{convo, ChatFormat};

/// `generate` arguments.
#[derive(Args)]
pub struct GenerateArgs {
    /// the .gguf model
    model: PathBuf,
    /// system prompt (none by default: the template's own default applies, if it has one)
    #[arg(long, conflicts_with = "system_file", help_heading = "Conversation")]
    system: Option<String>,
    /// read the system prompt from a file
    #[arg(long, value_name = "FILE", help_heading = "Conversation")]
    system_file: Option<PathBuf>,
    /// the user's message
    #[arg(
        long,
        conflicts_with = "user_file",
        required_unless_present = "user_file",
        help_heading = "Conversation"
    )]
    user: Option<String>,
    /// one user message per line
    #[arg(long, value_name = "FILE", help_heading = "Conversation")]
    user_file: Option<PathBuf>,
    /// most tokens per reply
    #[arg(long, default_value_t = 128, help_heading = "Sampling")]
    max_tokens: usize,
    /// sampling temperature (0 = greedy)
    #[arg(long, default_value_t = 0.0, help_heading = "Sampling")]
    temperature: f32,
    /// sampling seed
    #[arg(short, long, default_value_t = 42, help_heading = "Sampling")]
    seed: u64,
    /// apply this LoRA adapter GGUF (as written by `bake --emit lora` or `patch --emit lora`)
    #[arg(long, value_name = "ADAPTER", help_heading = "Adapter")]
    lora: Option<PathBuf>,
    /// scale of the adapter (0 = the model alone)
    #[arg(
        long,
        default_value_t = 1.0,
        requires = "lora",
        help_heading = "Adapter"
    )]
    lora_scale: f32,
    /// one JSON object per line: {"user": …, "reply": …}
    #[arg(long, help_heading = "Output")]
    json: bool,
}

/// Run `generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    let users = match &a.user {
        Some(u) => vec![u.clone()],
        None => lines_or(&a.user_file, "user", Vec::new)?,
    };
    if users.is_empty() {
        bail!("give the user message with --user TEXT or --user-file FILE");
    }
    let system = text_or_file(&a.system, &a.system_file, "system")?;
    let model = Model::load(&a.model)?;
    let fmt = ChatFormat::for_model(&model)?;
    let prompts = users
        .iter()
        .map(|u| convo::prompt_tokens(&model, &fmt, system.as_deref(), u))
        .collect::<Result<Vec<_>>>()?;
    let opts = GenOptions {
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
