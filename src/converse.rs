//! A conversation over several turns, as a chat client holds one: each reply generated greedily
//! (or sampled) and kept, as text, in the context of the next turn.

use anyhow::Result;
use std::path::Path;

use crate::engine::Model;
use crate::generate::{generate, generate_adapted, GenOptions};
use crate::text::chat::ChatFormat;
use crate::text::convo::chat_tokens;

/// One exchange of a conversation: the user's turn and the model's reply (trimmed text).
pub type Exchange = (String, String);

/// Hold a conversation of `users`' turns, in order, after `system` (none: the template's own
/// default); with `adapter`, the LoRA adapter GGUF at that path applied at that scale. Returns
/// every exchange; `progress` is called once per reply.
pub fn converse(
    model: &Model,
    fmt: &ChatFormat,
    system: Option<&str>,
    users: &[String],
    opts: &GenOptions,
    adapter: Option<(&Path, f32)>,
    mut progress: impl FnMut(),
) -> Result<Vec<Exchange>> {
    let mut history: Vec<Exchange> = Vec::with_capacity(users.len());
    for u in users {
        let prompt = chat_tokens(model, fmt, system, &history, u)?;
        let reply = replies(model, fmt, &[prompt], opts, adapter, || {})?.remove(0);
        history.push((u.clone(), reply_text(model, fmt, &reply)));
        progress();
    }
    Ok(history)
}

/// Replies to `prompts`, with the adapter applied where one is given; `progress` is called
/// once per reply.
pub fn replies(
    model: &Model,
    fmt: &ChatFormat,
    prompts: &[Vec<i32>],
    opts: &GenOptions,
    adapter: Option<(&Path, f32)>,
    progress: impl FnMut(),
) -> Result<Vec<Vec<i32>>> {
    match adapter {
        Some((a, scale)) => generate_adapted(model, fmt, prompts, opts, a, scale, progress),
        None => generate(model, fmt, prompts, opts, progress),
    }
}

/// A reply's text as a chat client shows and keeps it: detokenized, cut at the plain-text turn
/// marker, trimmed.
pub fn reply_text(model: &Model, fmt: &ChatFormat, reply: &[i32]) -> String {
    fmt.trim_reply(&model.detokenize(reply)).trim().to_string()
}
