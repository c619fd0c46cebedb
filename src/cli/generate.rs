//! `gguf-sleep generate`: replies through the model's chat template.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use super::args::{lines_or, text_or_file};
use super::progress::bar;
use gguf_sleep::converse::{converse, replies, reply_text};
use gguf_sleep::engine::Model;
use gguf_sleep::generate::GenOptions;
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
    /// earlier user turns, one per line: the model answers them first, in order, each reply
    /// kept in the context, and every user message is asked after that conversation
    #[arg(long, value_name = "FILE", help_heading = "Conversation")]
    history_file: Option<PathBuf>,
    /// use only the first N turns of --history-file [default: all]
    #[arg(
        long,
        value_name = "N",
        requires = "history_file",
        help_heading = "Conversation"
    )]
    history_turns: Option<usize>,
    /// ask every user message after each length of the conversation, 0 to all of its turns
    /// (turn 1 to N+1), not only after the whole of it
    #[arg(long, requires = "history_file", help_heading = "Conversation")]
    every_turn: bool,
    /// one JSON object per line: {"user": …, "reply": …, "turn": …}
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
    let mut earlier = lines_or(&a.history_file, "history", Vec::new)?;
    if let Some(n) = a.history_turns {
        if n > earlier.len() {
            bail!(
                "--history-turns {n} asks for more turns than the {} of --history-file",
                earlier.len()
            );
        }
        earlier.truncate(n);
    }
    let model = Model::load(&a.model)?;
    let fmt = ChatFormat::for_model(&model)?;
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        seed: a.seed,
        ..Default::default()
    };
    let adapter = a.lora.as_deref().map(|l| (l, a.lora_scale));
    let pb = bar(earlier.len(), "conversation");
    let history = converse(
        &model,
        &fmt,
        system.as_deref(),
        &earlier,
        &opts,
        adapter,
        || pb.inc(1),
    )?;
    pb.finish_and_clear();
    // (turn, user message) asked: after the whole conversation, or after each length of it
    let asked: Vec<(usize, &String)> = if a.every_turn {
        (0..=history.len())
            .flat_map(|k| users.iter().map(move |u| (k, u)))
            .collect()
    } else {
        users.iter().map(|u| (history.len(), u)).collect()
    };
    let prompts = asked
        .iter()
        .map(|&(k, u)| convo::chat_tokens(&model, &fmt, system.as_deref(), &history[..k], u))
        .collect::<Result<Vec<_>>>()?;
    let pb = bar(prompts.len(), "generate");
    let replies = replies(&model, &fmt, &prompts, &opts, adapter, || pb.inc(1))?;
    pb.finish_and_clear();
    for ((k, u), r) in asked.into_iter().zip(replies) {
        let text = reply_text(&model, &fmt, &r);
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "user": u, "reply": text, "turn": k + 1 })
            );
        } else {
            println!("> {u}\n{text}\n");
        }
    }
    Ok(())
}
