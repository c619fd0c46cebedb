//! Teacher-forced material: calibration questions, the prompted model's own replies to them,
//! and each exchange rendered with and without the system prompt, aligned.

use anyhow::Result;

use crate::chat::ChatFormat;
use crate::convo::{align, prompt_tokens, Alignment};
use crate::engine::Model;
use crate::generate::{generate, GenOptions};

/// The built-in calibration questions (≥ 128, disjoint from the held-out set).
pub const CALIBRATION: &str = include_str!("../data/calibration.txt");

/// One calibration exchange in both renderings.
#[derive(Debug, Clone)]
pub struct Pair {
    /// the user's question
    pub question: String,
    /// tokens with the system prompt, reply included
    pub prompted: Vec<i32>,
    /// tokens without it (as the patched model is used), reply included
    pub unprompted: Vec<i32>,
    /// where the shared user turn and reply sit in each
    pub align: Alignment,
    /// reply length in tokens
    pub reply_len: usize,
}

/// Generate the prompted model's replies to `questions` and build the aligned pairs.
pub fn build(
    model: &Model,
    system: &str,
    questions: &[String],
    gen: &GenOptions,
    progress: impl FnMut(),
) -> Result<Vec<Pair>> {
    let fmt = ChatFormat::for_model(model)?;
    let prompts: Vec<Vec<i32>> = questions
        .iter()
        .map(|q| prompt_tokens(model, &fmt, Some(system), q))
        .collect::<Result<_>>()?;
    let replies = generate(model, &fmt, &prompts, gen, progress)?;
    let mut out = Vec::with_capacity(questions.len());
    for ((q, p), r) in questions.iter().zip(prompts).zip(replies) {
        let mut prompted = p;
        prompted.extend_from_slice(&r);
        let mut unprompted = prompt_tokens(model, &fmt, None, q)?;
        unprompted.extend_from_slice(&r);
        let a = align(model, &prompted, &unprompted, q, r.len())?;
        out.push(Pair {
            question: q.clone(),
            prompted,
            unprompted,
            align: a,
            reply_len: r.len(),
        });
    }
    Ok(out)
}
