//! Teacher-forced material: the prompted model's own replies to the calibration questions, and
//! each exchange rendered with and without the system prompt, aligned.

use anyhow::{bail, Result};

use crate::engine::Model;
use crate::generate::{generate, GenOptions};
use crate::text::content::content_positions;
use crate::text::convo::{align, prompt_tokens, Alignment};
use crate::text::{ChatFormat, Rendering};

/// One calibration exchange in both renderings.
#[derive(Debug, Clone)]
pub struct Pair {
    /// the user's question
    pub question: String,
    /// tokens with the system prompt, reply included
    pub prompted: Vec<i32>,
    /// tokens without it (as the patched model is used, in `rendering`), reply included
    pub unprompted: Vec<i32>,
    /// how the unprompted side is rendered
    pub rendering: Rendering,
    /// where the shared user turn and reply sit in each
    pub align: Alignment,
    /// reply length in tokens
    pub reply_len: usize,
    /// the reply's content tokens (indices into the reply): they spell a word of the system
    /// prompt the question does not contain ([`crate::text::content`])
    pub content: Vec<usize>,
    /// held out to choose λ and score the fit ([`crate::text::is_validation`] of its question)
    pub validation: bool,
}

impl Pair {
    /// One weight per aligned row: `content_weight` for a row that predicts a content token of
    /// the reply (the row before it), 1 for every other row.
    pub fn row_weights(&self, content_weight: f32) -> Vec<f32> {
        let mut w = vec![1.0; self.align.len];
        let first = self.align.len - self.reply_len;
        for &j in &self.content {
            if let Some(r) = (first + j).checked_sub(1) {
                w[r] = content_weight;
            }
        }
        w
    }
}

/// Generate the prompted model's replies to `questions` (or take `given` ones, one per
/// question, already sampled from it) and build the aligned pairs, their unprompted sides
/// cycling through `renderings`.
pub fn build(
    model: &Model,
    system: &str,
    questions: &[String],
    renderings: &[Rendering],
    gen: &GenOptions,
    given: Option<&[Vec<i32>]>,
    mut progress: impl FnMut(),
) -> Result<Vec<Pair>> {
    let fmt = ChatFormat::for_model(model)?;
    let prompts: Vec<Vec<i32>> = questions
        .iter()
        .map(|q| prompt_tokens(model, &fmt, Some(system), q))
        .collect::<Result<_>>()?;
    let replies = match given {
        Some(r) if r.len() == questions.len() => {
            questions.iter().for_each(|_| progress());
            r.to_vec()
        }
        Some(r) => bail!(
            "{} replies given for {} questions",
            r.len(),
            questions.len()
        ),
        None => replies(model, &fmt, system, questions, &prompts, gen, &mut progress)?,
    };
    let mut out = Vec::with_capacity(questions.len());
    for (i, ((q, p), r)) in questions.iter().zip(prompts).zip(replies).enumerate() {
        let mut prompted = p;
        prompted.extend_from_slice(&r);
        let rendering = Rendering::of(renderings, i);
        let mut unprompted = prompt_tokens(model, &fmt, rendering.system(), q)?;
        unprompted.extend_from_slice(&r);
        let a = align(model, &prompted, &unprompted, q, r.len())?;
        let content = content_positions(&model.pieces(&r), system, q)
            .into_iter()
            .enumerate()
            .filter_map(|(j, c)| c.then_some(j))
            .collect();
        out.push(Pair {
            question: q.clone(),
            prompted,
            unprompted,
            rendering,
            align: a,
            reply_len: r.len(),
            content,
            validation: crate::text::is_validation(i),
        });
    }
    Ok(out)
}

/// Plain-text pairs ([`crate::text::anchors`]): each paragraph tokenized as raw text, the same
/// tokens on both sides, every row but the first aligned. Fitted like the exchanges, their
/// target is the base model's own activations: no change outside a conversation. The first
/// position (the BOS, an attention sink whose activations dwarf every other row's) is left
/// out, as a conversation's first rows are.
pub fn anchors(model: &Model, paragraphs: &[&str]) -> Result<Vec<Pair>> {
    paragraphs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let tokens = model.tokenize(text, true, false)?;
            Ok(Pair {
                question: String::new(),
                prompted: tokens.clone(),
                align: Alignment {
                    prompted_start: 1,
                    unprompted_start: 1,
                    len: tokens.len().saturating_sub(1),
                },
                unprompted: tokens,
                rendering: Rendering::Template,
                reply_len: 0,
                content: Vec::new(),
                validation: crate::text::is_validation(i),
            })
        })
        .collect()
}

/// The prompted model's replies to `prompts` (the rendered `questions`), from the reply cache
/// when it has them, else generated and stored there.
fn replies(
    model: &Model,
    fmt: &ChatFormat,
    system: &str,
    questions: &[String],
    prompts: &[Vec<i32>],
    gen: &GenOptions,
    progress: &mut impl FnMut(),
) -> Result<Vec<Vec<i32>>> {
    let key = cache_key(model, system, questions, gen);
    if let Some(r) = load_cached(&key).filter(|r| r.len() == questions.len()) {
        return Ok(r);
    }
    // A question repeated in the set (a weight) is answered once when greedy.
    let mut first = std::collections::HashMap::new();
    let slot: Vec<usize> = (0..questions.len())
        .map(|i| {
            if gen.temperature > 0.0 {
                i
            } else {
                *first.entry(questions[i].as_str()).or_insert(i)
            }
        })
        .collect();
    let unique: Vec<usize> = (0..questions.len()).filter(|&i| slot[i] == i).collect();
    let todo: Vec<Vec<i32>> = unique.iter().map(|&i| prompts[i].clone()).collect();
    let got = generate(model, fmt, &todo, gen, &mut *progress)?;
    let mut by_index = std::collections::HashMap::new();
    for (&i, r) in unique.iter().zip(got) {
        by_index.insert(i, r);
    }
    let r: Vec<Vec<i32>> = slot.iter().map(|s| by_index[s].clone()).collect();
    for _ in unique.len()..questions.len() {
        progress();
    }
    store_cached(&key, &r);
    Ok(r)
}

/// Where generated calibration replies are kept between runs (`GGUF_SLEEP_REPLY_CACHE`, else
/// `~/.cache/gguf-sleep/replies`); `GGUF_SLEEP_REPLY_CACHE=off` disables the cache.
fn cache_dir() -> Option<std::path::PathBuf> {
    match std::env::var_os("GGUF_SLEEP_REPLY_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(v.into()),
        None => Some(
            std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/gguf-sleep/replies"),
        ),
    }
}

/// Replies depend on the model file, the prompt, the questions and the generation settings.
fn cache_key(model: &Model, system: &str, questions: &[String], gen: &GenOptions) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let meta = std::fs::metadata(model.path()).ok();
    h.update(model.path().to_string_lossy().as_bytes());
    h.update(format!(
        "{:?}|{:?}|{}|{}|{}|{}",
        meta.as_ref().map(|m| m.len()),
        meta.and_then(|m| m.modified().ok()),
        gen.max_tokens,
        gen.temperature,
        gen.seed,
        env!("CARGO_PKG_VERSION")
    ));
    h.update(system.as_bytes());
    for q in questions {
        h.update(b"\n");
        h.update(q.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn load_cached(key: &str) -> Option<Vec<Vec<i32>>> {
    let text = std::fs::read_to_string(cache_dir()?.join(format!("{key}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn store_cached(key: &str, replies: &[Vec<i32>]) {
    let Some(dir) = cache_dir() else { return };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("{key}.json.tmp{}", std::process::id()));
    if let Ok(text) = serde_json::to_string(replies) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(format!("{key}.json")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_before_each_content_token_carries_the_weight() {
        // 6 aligned rows: 2 of the user turn, then a 4-token reply whose tokens 0 and 2 are
        // content: rows 1 (before reply token 0) and 3 (before reply token 2) predict them.
        let p = Pair {
            question: "q".into(),
            prompted: vec![0; 9],
            unprompted: vec![0; 7],
            rendering: Rendering::Template,
            align: Alignment {
                prompted_start: 3,
                unprompted_start: 1,
                len: 6,
            },
            reply_len: 4,
            content: vec![0, 2],
            validation: false,
        };
        assert_eq!(p.row_weights(5.0), [1.0, 5.0, 1.0, 5.0, 1.0, 1.0]);
        assert!(p.row_weights(1.0).iter().all(|&w| w == 1.0));
    }
}
