//! Conversations as token sequences, and the alignment of a prompted and an unprompted
//! rendering of the same user turn and reply.

use anyhow::{bail, Result};

use super::chat::ChatFormat;
use crate::engine::Model;

/// One rendered exchange: the tokens up to the assistant's reply, then the reply's tokens.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// tokens up to where the reply starts
    pub prompt: Vec<i32>,
    /// the reply (may end with an end-of-generation token)
    pub reply: Vec<i32>,
}

impl Exchange {
    /// prompt followed by reply
    pub fn tokens(&self) -> Vec<i32> {
        let mut t = self.prompt.clone();
        t.extend_from_slice(&self.reply);
        t
    }
}

/// Tokens of the conversation [system?, user] up to the start of the assistant's reply, as the
/// model is used at inference (BOS added by the tokenizer unless the template already has it).
pub fn prompt_tokens(
    model: &Model,
    fmt: &ChatFormat,
    system: Option<&str>,
    user: &str,
) -> Result<Vec<i32>> {
    chat_tokens(model, fmt, system, &[], user)
}

/// Tokens of the conversation [system?, earlier exchanges, user] up to the start of the
/// assistant's reply, as [`prompt_tokens`] renders one turn.
pub fn chat_tokens(
    model: &Model,
    fmt: &ChatFormat,
    system: Option<&str>,
    history: &[(String, String)],
    user: &str,
) -> Result<Vec<i32>> {
    let text = fmt.render_chat(system, history, user)?;
    let template_has_bos = !fmt.bos().is_empty() && text.starts_with(fmt.bos());
    model.tokenize(&text, !template_has_bos, true)
}

/// A system prompt that does not leave room for a conversation in the model's context is
/// refused.
pub fn check_prompt_fits(model: &Model, system: &str) -> Result<()> {
    let fmt = ChatFormat::for_model(model)?;
    let n = prompt_tokens(model, &fmt, Some(system), "Hi")?.len();
    let (n_ctx, trained) = (model.ctx_size(), model.info().n_ctx_train);
    if n + 64 > n_ctx {
        let raise = if n_ctx < trained {
            format!(" or raise `ctx_size` (the model was trained on {trained})")
        } else {
            String::new()
        };
        bail!(
            "the system prompt takes {n} tokens, which leaves no room in a {n_ctx}-token \
             context: shorten it{raise}"
        );
    }
    Ok(())
}

/// Where the shared part (user turn and reply) sits in a prompted and an unprompted sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// first shared token in the prompted sequence
    pub prompted_start: usize,
    /// first shared token in the unprompted sequence
    pub unprompted_start: usize,
    /// number of shared tokens (they run to the end of both sequences)
    pub len: usize,
}

/// Align a prompted and an unprompted sequence of the same exchange: their longest common
/// suffix. It must cover the user's text and the reply, else the template renders them
/// differently with and without a system prompt, and that is an error.
pub fn align(
    model: &Model,
    prompted: &[i32],
    unprompted: &[i32],
    user: &str,
    reply_len: usize,
) -> Result<Alignment> {
    let len = prompted
        .iter()
        .rev()
        .zip(unprompted.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let a = Alignment {
        prompted_start: prompted.len() - len,
        unprompted_start: unprompted.len() - len,
        len,
    };
    let shared_text =
        model.detokenize(&unprompted[a.unprompted_start..unprompted.len() - reply_len.min(len)]);
    if len < reply_len || !shared_text.contains(user.trim()) {
        bail!(
            "the chat template renders the user turn differently with and without a system prompt \
             ({len} shared tokens); gguf-sleep cannot align them for this model"
        );
    }
    Ok(a)
}
