//! The teacher: the prompted model in llama.cpp. Its trajectories are calibration questions
//! with replies it samples itself (temperature T, several per question, seeded); at every reply
//! position its next-token distribution is kept as the top-k log-probabilities plus the log of
//! the remaining (tail) mass. KL against this coarsened distribution is a lower bound of the full
//! KL that is exact on the top-k tokens; the tail mass it lumps together is reported.

use anyhow::Result;

use crate::engine::Model;
use crate::generate::{generate_observed, GenOptions};
use crate::text::chat::ChatFormat;
use crate::text::convo::{align, prompt_tokens};

/// One trajectory, as the student sees it: the conversation rendered with no system prompt,
/// and the teacher's distribution at each reply position.
#[derive(Debug, Clone)]
pub struct Example {
    /// the calibration question
    pub question: String,
    /// its position in the question list
    pub question_index: usize,
    /// unprompted tokens, reply included
    pub tokens: Vec<i32>,
    /// index of the token whose logits predict the first reply token
    pub first: usize,
    /// reply positions scored (= reply length)
    pub n: usize,
    /// top-k token ids, `n × k` (u32: candle's index type, as they are gathered)
    pub ids: Vec<u32>,
    /// their teacher log-probabilities, `n × k`
    pub logp: Vec<f32>,
    /// log of the teacher's mass outside the top k, per position
    pub tail: Vec<f32>,
}

/// One position's top-k token ids, their log-probabilities, and the log of the tail mass.
pub type TopK = (Vec<u32>, Vec<f32>, f32);

/// Teacher settings.
#[derive(Debug, Clone)]
pub struct TeacherOptions {
    /// replies sampled per question
    pub per_question: usize,
    /// sampling temperature (0 = one greedy reply per question)
    pub temperature: f32,
    /// most reply tokens
    pub max_tokens: usize,
    /// sampling seed
    pub seed: u64,
    /// log-probabilities kept per position
    pub top_k: usize,
}

/// Sample the trajectories and record the teacher's distributions, both in one pass: the
/// logits the prompted model samples each reply token from are its distribution there.
/// `progress(phase, done, total)`.
pub fn trajectories(
    model: &Model,
    system: &str,
    questions: &[String],
    opts: &TeacherOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<Example>> {
    let fmt = ChatFormat::for_model(model)?;
    let k = opts.per_question.max(1);
    let index: Vec<usize> = (0..questions.len())
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let prompts: Vec<Vec<i32>> = index
        .iter()
        .map(|&i| prompt_tokens(model, &fmt, Some(system), &questions[i]))
        .collect::<Result<_>>()?;
    let gen = GenOptions {
        max_tokens: opts.max_tokens,
        temperature: opts.temperature,
        seed: opts.seed,
        parallel: 32,
    };
    let total = prompts.len();
    let mut done = 0;
    let mut dists: Vec<Vec<TopK>> = vec![Vec::new(); total];
    let replies = generate_observed(
        model,
        &fmt,
        &prompts,
        &gen,
        || {
            done += 1;
            progress("teacher", done, total);
        },
        |s, logits| dists[s].push(top_k_of_logits(logits, opts.top_k)),
    )?;
    let mut out = Vec::with_capacity(total);
    for (((&qi, p), reply), dist) in index.iter().zip(&prompts).zip(replies).zip(dists) {
        if reply.is_empty() {
            continue;
        }
        let q = &questions[qi];
        let mut unprompted = prompt_tokens(model, &fmt, None, q)?;
        unprompted.extend_from_slice(&reply);
        let mut prompted = p.clone();
        prompted.extend_from_slice(&reply);
        align(model, &prompted, &unprompted, q, reply.len())?;
        let n = reply.len();
        let mut ex = Example {
            question: q.clone(),
            question_index: qi,
            tokens: unprompted.clone(),
            first: unprompted.len() - n - 1,
            n,
            ids: Vec::with_capacity(n * opts.top_k),
            logp: Vec::with_capacity(n * opts.top_k),
            tail: Vec::with_capacity(n),
        };
        for (ids, vals, tail) in dist.into_iter().take(n) {
            ex.ids.extend(ids);
            ex.logp.extend(vals);
            ex.tail.push(tail);
        }
        out.push(ex);
    }
    Ok(out)
}

/// [`top_k`] straight from raw logits: only the log-normaliser is computed over the whole
/// vocabulary (Gemma-3's has 262,144 entries), not a full log-softmax row.
pub fn top_k_of_logits(logits: &[f32], k: usize) -> TopK {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let (ids, raw, _) = top_k(logits, k);
    let vals: Vec<f32> = raw.iter().map(|&l| (l as f64 - lse) as f32).collect();
    let kept: f64 = vals.iter().map(|&v| (v as f64).exp()).sum();
    (ids, vals, (1.0 - kept).max(1e-12).ln() as f32)
}

/// The `k` most likely tokens of a log-probability row, their log-probabilities, and the log of
/// the mass left outside them (clamped at 1e-12).
pub fn top_k(logp: &[f32], k: usize) -> TopK {
    let k = k.min(logp.len());
    let mut idx: Vec<u32> = (0..logp.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k, |&a, &b| logp[b as usize].total_cmp(&logp[a as usize]));
        idx.truncate(k);
    }
    idx.sort_by(|&a, &b| logp[b as usize].total_cmp(&logp[a as usize]));
    let vals: Vec<f32> = idx.iter().map(|&i| logp[i as usize]).collect();
    let kept: f64 = vals.iter().map(|&v| (v as f64).exp()).sum();
    let tail = (1.0 - kept).max(1e-12).ln() as f32;
    (idx, vals, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_and_the_tail_mass() {
        let p = [0.5f32, 0.1, 0.3, 0.1];
        let lp: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let (ids, vals, tail) = top_k(&lp, 2);
        assert_eq!(ids, vec![0, 2]);
        assert!((vals[0].exp() - 0.5).abs() < 1e-6 && (vals[1].exp() - 0.3).abs() < 1e-6);
        assert!((tail.exp() - 0.2).abs() < 1e-6, "{}", tail.exp());
        let logits: Vec<f32> = lp.iter().map(|v| v + 3.0).collect();
        let (ids2, vals2, tail2) = top_k_of_logits(&logits, 2);
        assert_eq!(ids2, ids);
        assert!((vals2[0] - vals[0]).abs() < 1e-5 && (tail2 - tail).abs() < 1e-5);
    }
}
