//! The fidelity instrument (Prompt Baking's objective): how closely a candidate model used with
//! no system prompt follows the base model used with it.
//!
//! For each held-out question: the prompted base model's greedy reply; then, teacher-forced on
//! that reply, per-token KL(prompted base ‖ unprompted base) and KL(prompted base ‖ unprompted
//! candidate), and top-1 agreement. `recovery = 1 − kl_candidate / kl_base`. The same figures
//! on the content positions alone ([`crate::text::content`]: the reply tokens that spell a word of the prompt
//! the question does not contain) say whether what the prompt says is carried, not only how it
//! makes the model speak. Locality is KL(base ‖ candidate) on neutral text, with no chat
//! template.

use anyhow::{bail, Result};

use crate::engine::{Batch, Context, ContextOptions, Model};
use crate::generate::{argmax, generate, GenOptions};
use crate::text::chat::ChatFormat;
use crate::text::content;
use crate::text::convo::{align, prompt_tokens};

/// Built-in neutral paragraphs for locality, separated by blank lines.
pub const NEUTRAL: &str = include_str!("../../data/neutral.txt");

/// Eval settings.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// reply length of the prompted base model
    pub max_tokens: usize,
    /// run the locality check
    pub locality: bool,
    /// a LoRA adapter llama.cpp applies to the candidate
    pub lora: Option<std::path::PathBuf>,
    /// the adapter's scale
    pub lora_scale: f32,
    /// give the candidate the system prompt too (how a baked model behaves when re-prompted)
    pub reprompt: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            max_tokens: 64,
            locality: true,
            lora: None,
            lora_scale: 1.0,
            reprompt: false,
        }
    }
}

/// Fidelity numbers of one candidate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    /// held-out questions used
    pub questions: usize,
    /// over every teacher-forced reply token
    #[serde(flatten)]
    pub all: Figures,
    /// mean KL(base ‖ candidate) per token on neutral text
    pub locality_kl: Option<f64>,
    /// neutral tokens scored
    pub locality_tokens: usize,
    /// the same figures on the content positions alone ([`content`]; `None`: no reply spelled
    /// a word of the prompt). Their `top1_candidate` is the share of the prompt's content words
    /// the candidate emits itself ("content recovery").
    pub content: Option<Figures>,
    /// the same figures on the first piece of each content word alone
    /// ([`content::Mark::starts`]): the token a free-running model has to get right for the
    /// rest of the word to follow
    pub content_first: Option<Figures>,
}

/// KL and top-1 figures over a set of teacher-forced reply positions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// positions scored
    pub tokens: usize,
    /// mean KL(prompted base ‖ unprompted base) per position
    pub kl_base: f64,
    /// mean KL(prompted base ‖ unprompted candidate) per position
    pub kl_candidate: f64,
    /// 1 − kl_candidate / kl_base
    pub recovery: f64,
    /// top-1 agreement of the unprompted base with the prompted base
    pub top1_base: f64,
    /// top-1 agreement of the unprompted candidate with the prompted base
    pub top1_candidate: f64,
}

/// Running sums of KL and top-1 agreement over scored positions.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    kl_b: f64,
    kl_c: f64,
    t1_b: usize,
    t1_c: usize,
    n: usize,
}

impl Sums {
    /// The sums of one position's figures.
    fn one(teacher: &[f32], unprompted: &[f32], cand: &[f32]) -> Sums {
        let top = argmax(teacher);
        Sums {
            kl_b: kl(teacher, unprompted),
            kl_c: kl(teacher, cand),
            t1_b: (argmax(unprompted) == top) as usize,
            t1_c: (argmax(cand) == top) as usize,
            n: 1,
        }
    }

    fn add(&mut self, o: &Sums) {
        self.kl_b += o.kl_b;
        self.kl_c += o.kl_c;
        self.t1_b += o.t1_b;
        self.t1_c += o.t1_c;
        self.n += o.n;
    }

    /// The means, over the positions added.
    fn figures(&self) -> Figures {
        let n = self.n.max(1) as f64;
        let (kl_base, kl_candidate) = (self.kl_b / n, self.kl_c / n);
        Figures {
            tokens: self.n,
            kl_base,
            kl_candidate,
            recovery: if kl_base > 0.0 {
                1.0 - kl_candidate / kl_base
            } else {
                0.0
            },
            top1_base: self.t1_b as f64 / n,
            top1_candidate: self.t1_c as f64 / n,
        }
    }
}

/// Evaluate `candidate` against `base` prompted with `system`, on `questions`.
/// `progress(done, total)` is called as questions are scored.
pub fn eval(
    base: &Model,
    candidate: &Model,
    system: &str,
    questions: &[String],
    opts: &EvalOptions,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    if questions.is_empty() {
        bail!("no questions to evaluate on");
    }
    if base.info().n_vocab != candidate.info().n_vocab {
        bail!(
            "the candidate's vocabulary ({}) differs from the base's ({})",
            candidate.info().n_vocab,
            base.info().n_vocab
        );
    }
    let fmt = ChatFormat::for_model(base)?;
    let cfmt = ChatFormat::for_model(candidate)?;
    let prompted: Vec<Vec<i32>> = questions
        .iter()
        .map(|q| prompt_tokens(base, &fmt, Some(system), q))
        .collect::<Result<_>>()?;
    let gen = GenOptions {
        max_tokens: opts.max_tokens,
        ..Default::default()
    };
    let mut done = 0;
    let replies = generate(base, &fmt, &prompted, &gen, || {
        done += 1;
        progress("replies", done, questions.len());
    })?;

    let longest = prompted
        .iter()
        .zip(&replies)
        .map(|(p, r)| p.len() + r.len())
        .max()
        .unwrap_or(1);
    let n_ctx = longest.next_multiple_of(256) as u32;
    let copts = ContextOptions {
        n_ctx,
        n_batch: n_ctx,
        n_seq_max: 1,
        capture: false,
    };
    let adapter = opts
        .lora
        .as_deref()
        .map(|p| candidate.load_lora(p))
        .transpose()?;
    let mut bctx = Context::new(base, &copts)?;
    let mut cctx = Context::new(candidate, &copts)?;
    if let Some(a) = &adapter {
        cctx.set_lora(a, opts.lora_scale)?;
    }
    let csys = opts.reprompt.then_some(system);

    let (mut all, mut on_content, mut on_first) =
        (Sums::default(), Sums::default(), Sums::default());
    for (qi, q) in questions.iter().enumerate() {
        let reply = &replies[qi];
        if reply.is_empty() {
            continue;
        }
        let mut p_seq = prompted[qi].clone();
        p_seq.extend_from_slice(reply);
        let mut u_seq = prompt_tokens(base, &fmt, None, q)?;
        u_seq.extend_from_slice(reply);
        let mut c_seq = prompt_tokens(candidate, &cfmt, csys, q)?;
        c_seq.extend_from_slice(reply);
        align(base, &p_seq, &u_seq, q, reply.len())?;
        let teacher = logprobs_at(&mut bctx, &p_seq, reply.len())?;
        let unprompted = logprobs_at(&mut bctx, &u_seq, reply.len())?;
        let cand = logprobs_at(&mut cctx, &c_seq, reply.len())?;
        let marks = content::content_marks(&base.pieces(reply), system, q);
        for (j, m) in marks.iter().enumerate() {
            let here = Sums::one(&teacher[j], &unprompted[j], &cand[j]);
            all.add(&here);
            if m.within {
                on_content.add(&here);
            }
            if m.starts {
                on_first.add(&here);
            }
        }
        progress("scoring", qi + 1, questions.len());
    }
    if all.n == 0 {
        bail!("the prompted model produced no reply tokens");
    }
    let content = (on_content.n > 0).then(|| on_content.figures());
    let content_first = (on_first.n > 0).then(|| on_first.figures());
    let (locality_kl, locality_tokens) = if opts.locality {
        let (v, t) = locality(&mut bctx, &mut cctx)?;
        (Some(v), t)
    } else {
        (None, 0)
    };
    Ok(EvalReport {
        questions: questions.len(),
        all: all.figures(),
        locality_kl,
        locality_tokens,
        content,
        content_first,
    })
}

/// Mean KL(base ‖ candidate) per token over the built-in neutral paragraphs.
fn locality(bctx: &mut Context, cctx: &mut Context) -> Result<(f64, usize)> {
    let (mut total, mut n) = (0f64, 0usize);
    for para in crate::text::paragraphs(NEUTRAL) {
        let toks = bctx.model().tokenize(para, true, false)?;
        let k = toks.len() - 1;
        let a = logprobs_at(bctx, &toks, k)?;
        let b = logprobs_at(cctx, &toks, k)?;
        for j in 0..k {
            total += kl(&a[j], &b[j]);
            n += 1;
        }
    }
    Ok((if n > 0 { total / n as f64 } else { 0.0 }, n))
}

/// Log-probabilities predicting each of the last `count` tokens of `tokens` (teacher-forced).
pub fn logprobs_at(ctx: &mut Context, tokens: &[i32], count: usize) -> Result<Vec<Vec<f32>>> {
    if count == 0 || count > tokens.len() || tokens.len() > ctx.n_batch() as usize {
        bail!(
            "cannot score {count} of {} tokens in a context of {}",
            tokens.len(),
            ctx.n_batch()
        );
    }
    ctx.clear();
    let first = tokens.len() - count - 1; // position predicting tokens[len - count]
    let mut batch = Batch::new(tokens.len());
    for (i, &t) in tokens.iter().enumerate() {
        batch.push(t, i as i32, 0, i >= first && i + 1 < tokens.len());
    }
    ctx.decode(&batch)?;
    (first..tokens.len() - 1)
        .map(|i| Ok(log_softmax(ctx.logits(i)?)))
        .collect()
}

/// log-softmax in f64 accumulation.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

/// KL(p ‖ q) for log-probability vectors, in nats, clamped at 0 against rounding.
pub fn kl(logp: &[f32], logq: &[f32]) -> f64 {
    let v: f64 = logp
        .iter()
        .zip(logq)
        .map(|(&a, &b)| {
            let pa = (a as f64).exp();
            if pa == 0.0 {
                0.0
            } else {
                pa * (a as f64 - b as f64)
            }
        })
        .sum();
    v.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_identical_is_zero_and_positive_otherwise() {
        let p = log_softmax(&[1.0, 2.0, 3.0]);
        let q = log_softmax(&[3.0, 2.0, 1.0]);
        assert_eq!(kl(&p, &p), 0.0);
        let v = kl(&p, &q);
        // Exact value: sum p_i (log p_i - log q_i).
        let pe: Vec<f64> = p.iter().map(|&x| (x as f64).exp()).collect();
        let want: f64 = (0..3).map(|i| pe[i] * (p[i] as f64 - q[i] as f64)).sum();
        assert!((v - want).abs() < 1e-9 && v > 0.5, "{v} vs {want}");
    }

    #[test]
    fn log_softmax_normalises() {
        let l = log_softmax(&[1000.0, 1001.0, 999.0]);
        let s: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
