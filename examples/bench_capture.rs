//! Benchmark: prefill of calibration conversations with capture of every layer against the same
//! prefill without capture, in one process (see `scripts/bench-capture.sh`).
//!
//! The conversations are the built-in calibration questions rendered through the model's chat
//! template with a system prompt, exactly as `patch` feeds them. Three modes, each over the same
//! token sequences, one conversation per decode (as `capture::run` does), taking turns on each
//! conversation:
//!
//! - `plain`: a context without the graph callback; logits for the last token only (what a
//!   normal prefill computes);
//! - `plain-all-logits`: the same with logits for every token; capturing the last layer makes
//!   llama.cpp keep every row of it, so this is the same graph as the capture run;
//! - `capture`: `capture::run` with the callback observing the requested kinds on every layer,
//!   each node copied out to f32 as it is computed.
//!
//! Usage: `bench_capture [MODEL] [--conversations N] [--rounds R] [--kinds a,b,c | --all-kinds]`
//! Kinds: attn_norm, value, attn_probs, attn_out_pre, attn_out, resid, mlp_in, mlp_hidden,
//! mlp_out, block_out. Default: value, resid, mlp_in, block_out (`Vcur`, `ffn_inp`, `ffn_norm`,
//! `l_out`). Threads: `GGUF_SLEEP_THREADS`.

use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gguf_sleep::capture::{self, Kind, Request};
use gguf_sleep::engine::{self, Batch, Context, ContextOptions, Model};
use gguf_sleep::text::chat::ChatFormat;
use gguf_sleep::text::convo::prompt_tokens;

const SYSTEM: &str =
    "You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name.";

fn kind_by_name(s: &str) -> Result<Kind> {
    Ok(match s {
        "attn_norm" => Kind::AttnNorm,
        "value" | "Vcur" => Kind::Value,
        "attn_probs" | "kq_soft_max" => Kind::AttnProbs,
        "attn_out_pre" | "kqv_out" => Kind::AttnOutPre,
        "attn_out" => Kind::AttnOut,
        "resid" | "ffn_inp" => Kind::Resid,
        "mlp_in" | "ffn_norm" => Kind::MlpIn,
        "mlp_hidden" => Kind::MlpHidden,
        "mlp_out" | "ffn_out" => Kind::MlpOut,
        "block_out" | "l_out" => Kind::BlockOut,
        other => bail!("unknown kind '{other}'"),
    })
}

struct Args {
    model: PathBuf,
    conversations: usize,
    rounds: usize,
    kinds: Vec<Kind>,
}

fn parse_args() -> Result<Args> {
    let home = std::env::var("HOME").unwrap_or_default();
    let models = std::env::var_os("GGUF_SLEEP_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(home).join(".cache/gguf-sleep"));
    let mut a = Args {
        model: models.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        conversations: 64,
        rounds: 2,
        kinds: vec![Kind::Value, Kind::Resid, Kind::MlpIn, Kind::BlockOut],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--conversations" => a.conversations = value("--conversations")?.parse()?,
            "--rounds" => a.rounds = value("--rounds")?.parse()?,
            "--kinds" => {
                a.kinds = value("--kinds")?
                    .split(',')
                    .map(kind_by_name)
                    .collect::<Result<_>>()?
            }
            "--all-kinds" => a.kinds = Kind::ALL.to_vec(),
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => a.model = PathBuf::from(s),
        }
    }
    Ok(a)
}

/// One conversation in one decode, cache cleared first; logits for every row or the last.
fn prefill(ctx: &mut Context, conv: &[i32], all_logits: bool) -> Result<Duration> {
    let t0 = Instant::now();
    ctx.clear();
    let mut batch = Batch::new(conv.len());
    for (i, &t) in conv.iter().enumerate() {
        batch.push(t, i as i32, 0, all_logits || i + 1 == conv.len());
    }
    ctx.decode(&batch)?;
    std::hint::black_box(ctx.logits(conv.len() - 1)?);
    Ok(t0.elapsed())
}

/// `capture::run` on one conversation; returns the time and the number of floats captured.
fn with_capture(ctx: &mut Context, conv: &[i32], req: &Request) -> Result<(Duration, usize)> {
    let t0 = Instant::now();
    let cap = capture::run(ctx, conv, req)?;
    let floats = cap.tensors.values().map(|m| m.data.len()).sum::<usize>();
    std::hint::black_box(&cap);
    Ok((t0.elapsed(), floats))
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let model = Model::load(&a.model)?;
    let info = model.info().clone();
    let fmt = ChatFormat::for_model(&model)?;
    let questions = gguf_sleep::text::lines(gguf_sleep::text::questions::CALIBRATION);
    let convs: Vec<Vec<i32>> = questions
        .iter()
        .cycle()
        .take(a.conversations)
        .map(|q| prompt_tokens(&model, &fmt, Some(SYSTEM), q))
        .collect::<Result<_>>()?;
    let tokens: usize = convs.iter().map(Vec::len).sum();
    let longest = convs.iter().map(Vec::len).max().unwrap_or(1);
    let n = (longest as u32).next_multiple_of(256);
    let opts = |capture| ContextOptions {
        n_ctx: n,
        n_batch: n,
        n_seq_max: 1,
        capture,
    };
    // Captures need no logits: the forward pass stops before the output head.
    let mut req = Request::new(&a.kinds, 0..info.n_layer);
    req.stop_early = true;

    println!(
        "model {} ({}, {} layers), threads {}",
        a.model.display(),
        info.arch,
        info.n_layer,
        engine::default_threads()
    );
    println!(
        "{} conversations, {tokens} tokens (longest {longest}); capture of {:?} on all {} layers ({} nodes per decode)",
        convs.len(),
        a.kinds,
        info.n_layer,
        req.items.len()
    );

    let mut plain_ctx = Context::new(&model, &opts(false))?;
    let mut cap_ctx = Context::new(&model, &opts(true))?;
    // Warm-up: page in the weights and let llama.cpp allocate its buffers.
    prefill(&mut plain_ctx, &convs[0], true)?;
    with_capture(&mut cap_ctx, &convs[0], &req)?;

    // The three modes take turns on each conversation, so a change in background load hits
    // all of them alike.
    let (mut plain, mut plain_all, mut cap) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut floats = 0;
    for r in 0..a.rounds.max(1) {
        let (mut p, mut pa, mut c) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        floats = 0;
        for conv in &convs {
            p += prefill(&mut plain_ctx, conv, false)?;
            pa += prefill(&mut plain_ctx, conv, true)?;
            let (d, f) = with_capture(&mut cap_ctx, conv, &req)?;
            c += d;
            floats += f;
        }
        println!(
            "round {}: plain {:.3} s, plain-all-logits {:.3} s, capture {:.3} s (ratio {:.3})",
            r + 1,
            p.as_secs_f64(),
            pa.as_secs_f64(),
            c.as_secs_f64(),
            c.as_secs_f64() / p.as_secs_f64()
        );
        plain = plain.min(p);
        plain_all = plain_all.min(pa);
        cap = cap.min(c);
    }
    let tps = |d: Duration| tokens as f64 / d.as_secs_f64();
    println!("best of {} rounds:", a.rounds.max(1));
    println!(
        "  plain             {:>8.1} tokens/s ({:.3} s)",
        tps(plain),
        plain.as_secs_f64()
    );
    println!(
        "  plain-all-logits  {:>8.1} tokens/s ({:.3} s)",
        tps(plain_all),
        plain_all.as_secs_f64()
    );
    println!(
        "  capture           {:>8.1} tokens/s ({:.3} s), {:.1} MiB of activations",
        tps(cap),
        cap.as_secs_f64(),
        floats as f64 * 4.0 / (1u64 << 20) as f64
    );
    println!(
        "ratio capture/plain {:.3} (goal <= 1.3); capture/plain-all-logits {:.3}",
        cap.as_secs_f64() / plain.as_secs_f64(),
        cap.as_secs_f64() / plain_all.as_secs_f64()
    );
    Ok(())
}
