//! Batched generation: several conversations decoded side by side in one context, greedy by
//! default or sampled with a temperature and seed.

use anyhow::{bail, Result};
use std::path::Path;

use crate::engine::{Batch, Context, ContextOptions, Model};
use crate::text::chat::{ChatFormat, PLAIN_STOP};

/// Generation settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// most reply tokens
    pub max_tokens: usize,
    /// 0 = greedy
    pub temperature: f32,
    /// sampling seed
    pub seed: u64,
    /// conversations decoded together
    pub parallel: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_tokens: 64,
            temperature: 0.0,
            seed: 42,
            parallel: 8,
        }
    }
}

/// Generate a reply for each prompt (token sequences ending where the reply starts). Returns
/// the reply tokens of each, including the end-of-generation token when one was produced.
/// `progress` is called once per finished reply.
pub fn generate(
    model: &Model,
    fmt: &ChatFormat,
    prompts: &[Vec<i32>],
    opts: &GenOptions,
    progress: impl FnMut(),
) -> Result<Vec<Vec<i32>>> {
    generate_observed(model, fmt, prompts, opts, progress, |_, _| {})
}

/// [`generate`] with the LoRA adapter GGUF at `adapter` applied by llama.cpp, scaled by `scale`.
pub fn generate_adapted(
    model: &Model,
    fmt: &ChatFormat,
    prompts: &[Vec<i32>],
    opts: &GenOptions,
    adapter: &Path,
    scale: f32,
    progress: impl FnMut(),
) -> Result<Vec<Vec<i32>>> {
    run(
        model,
        fmt,
        prompts,
        opts,
        Some((adapter, scale)),
        progress,
        |_, _| {},
    )
}

/// [`generate`], also handing `observe(prompt index, logits)` the model's logits at every
/// reply position, before the token there is picked (a teacher's distributions for free).
pub fn generate_observed(
    model: &Model,
    fmt: &ChatFormat,
    prompts: &[Vec<i32>],
    opts: &GenOptions,
    progress: impl FnMut(),
    observe: impl FnMut(usize, &[f32]),
) -> Result<Vec<Vec<i32>>> {
    run(model, fmt, prompts, opts, None, progress, observe)
}

fn run(
    model: &Model,
    fmt: &ChatFormat,
    prompts: &[Vec<i32>],
    opts: &GenOptions,
    adapter: Option<(&Path, f32)>,
    mut progress: impl FnMut(),
    mut observe: impl FnMut(usize, &[f32]),
) -> Result<Vec<Vec<i32>>> {
    let par = opts.parallel.max(1).min(prompts.len().max(1));
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let per_seq = longest + opts.max_tokens + 1;
    let limit = model.ctx_size().max(512);
    if per_seq > limit {
        bail!(
            "a prompt of {longest} tokens plus {} reply tokens exceeds the {limit}-token context \
             (`ctx_size`): shorten the prompt or lower `max_tokens`",
            opts.max_tokens,
        );
    }
    let n_ctx = (per_seq * par).next_multiple_of(256) as u32;
    let n_batch = n_ctx.min(2048);
    let mut ctx = Context::new(
        model,
        &ContextOptions {
            n_ctx,
            n_batch,
            n_seq_max: par as u32,
            capture: false,
        },
    )?;
    let lora = adapter
        .map(|(p, scale)| Ok::<_, anyhow::Error>((model.load_lora(p)?, scale)))
        .transpose()?;
    if let Some((a, scale)) = &lora {
        ctx.set_lora(a, *scale)?;
    }
    let mut rng = SplitMix::new(opts.seed);
    let mut out = Vec::with_capacity(prompts.len());
    // The tokens every prompt starts with (the system prompt and the template's text before
    // the user's) are decoded once into sequence 0 and shared by every sequence's cache.
    let shared = shared_prefix(prompts);
    ctx.clear();
    ctx.prefill(prompts.first().map_or(&[][..], |p| &p[..shared]), 0, 0)?;
    for (g, group) in prompts.chunks(par).enumerate() {
        ctx.remove(0, shared as i32, -1);
        for s in 1..par as i32 {
            ctx.remove(s, 0, -1);
            ctx.share(0, s, 0, shared as i32)?;
        }
        let mut replies: Vec<Vec<i32>> = vec![Vec::new(); group.len()];
        let mut done = vec![false; group.len()];
        // Prefill: all prompts, in as many decodes as the batch size needs; each sequence's
        // first next-token distribution is kept as its last prompt token is decoded.
        let mut first: Vec<Vec<f32>> = vec![Vec::new(); group.len()];
        let mut batch = Batch::new(n_batch as usize);
        let mut flagged: Vec<(usize, usize)> = Vec::new();
        for (s, p) in group.iter().enumerate() {
            if p.is_empty() {
                bail!("cannot generate from an empty prompt");
            }
            for (i, &t) in p.iter().enumerate().skip(shared) {
                if batch.remaining() == 0 {
                    ctx.decode(&batch)?;
                    for (s, r) in flagged.drain(..) {
                        first[s] = ctx.logits(r)?.to_vec();
                    }
                    batch.clear();
                }
                let last = i + 1 == p.len();
                let r = batch.push(t, i as i32, s as i32, last);
                if last {
                    flagged.push((s, r));
                }
            }
        }
        ctx.decode(&batch)?;
        for (s, r) in flagged.drain(..) {
            first[s] = ctx.logits(r)?.to_vec();
        }
        let mut rows: Vec<Option<usize>> = vec![None; group.len()];
        loop {
            let mut step = Batch::new(group.len());
            let mut step_rows = Vec::new();
            for s in 0..group.len() {
                if done[s] {
                    continue;
                }
                let logits = match rows[s] {
                    Some(r) => ctx.logits(r)?,
                    None => &first[s],
                };
                observe(g * par + s, logits);
                let tok = pick(logits, opts.temperature, &mut rng);
                replies[s].push(tok);
                let text_stop =
                    !fmt.has_template() && model.detokenize(&replies[s]).contains(PLAIN_STOP);
                if model.is_eog(tok) || replies[s].len() >= opts.max_tokens || text_stop {
                    done[s] = true;
                    progress();
                    continue;
                }
                let pos = (group[s].len() + replies[s].len() - 1) as i32;
                step_rows.push((s, step.push(tok, pos, s as i32, true)));
            }
            if step.is_empty() {
                break;
            }
            ctx.decode(&step)?;
            for (s, r) in step_rows {
                rows[s] = Some(r);
            }
        }
        out.extend(replies);
    }
    Ok(out)
}

/// Length of the prefix all `prompts` share, leaving each at least its last token to decode
/// (its logits start the reply).
pub fn shared_prefix(prompts: &[Vec<i32>]) -> usize {
    let Some((first, rest)) = prompts.split_first() else {
        return 0;
    };
    let common = rest.iter().fold(first.len(), |n, p| {
        n.min(first.iter().zip(p).take_while(|(a, b)| a == b).count())
    });
    let shortest = prompts.iter().map(Vec::len).min().unwrap_or(0);
    common.min(shortest.saturating_sub(1))
}

/// Index of the largest logit (first on ties).
pub fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as i32
}

fn pick(logits: &[f32], temperature: f32, rng: &mut SplitMix) -> i32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, &x) in w.iter().enumerate() {
        u -= x;
        if u <= 0.0 {
            return i as i32;
        }
    }
    argmax(logits)
}

/// splitmix64: a small, well-known seeded generator (reproducible sampling).
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next number, uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
