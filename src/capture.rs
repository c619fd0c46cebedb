//! Capture of per-layer activations: the graph nodes that hold each quantity (named per
//! architecture in [`crate::arch`]), and the conversion of observed nodes into `[tokens × width]` matrices.

use anyhow::{bail, Context as _, Result};
use std::collections::{BTreeMap, HashSet};

use crate::arch::Family;
use crate::engine::{Batch, Captured, Context};

pub use crate::arch::Kind;

/// The graph node holding `kind` in architecture `arch` (llama.cpp's `cb(…, "NAME", il)`; see
/// [`crate::arch`]); `None` where its graph names no such node.
pub fn node_name(arch: &str, kind: Kind) -> Result<Option<&'static str>> {
    Ok(Family::of(arch)?.node(kind))
}

/// What to capture: kinds × layers.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// (kind, layer) pairs
    pub items: Vec<(Kind, usize)>,
    /// keep the logits of every position as well
    pub logits: bool,
    /// stop the forward pass after the last requested layer, before the output head (no
    /// logits; cheaper for early layers, and for the last layer it saves the all-token logits
    /// llama.cpp would otherwise need to keep every row)
    pub stop_early: bool,
}

impl Request {
    /// Every layer in `layers` for every kind in `kinds`.
    pub fn new(kinds: &[Kind], layers: impl IntoIterator<Item = usize> + Clone) -> Request {
        let items = kinds
            .iter()
            .flat_map(|&k| layers.clone().into_iter().map(move |l| (k, l)))
            .collect();
        Request {
            items,
            logits: false,
            stop_early: false,
        }
    }
}

/// A captured matrix: `rows` tokens × `cols` features, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// number of rows (tokens)
    pub rows: usize,
    /// number of columns (features)
    pub cols: usize,
    /// row-major values
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The result of one capture run over a token sequence.
#[derive(Debug, Default)]
pub struct Capture {
    /// (kind, layer) → matrix (`AttnProbs` is stored as `[head·query] × key`)
    pub tensors: BTreeMap<(Kind, usize), Matrix>,
    /// logits per position (when requested), `[T × n_vocab]`
    pub logits: Option<Matrix>,
    /// for `AttnProbs`: number of heads
    pub n_head: usize,
}

/// Run `tokens` (one sequence from position 0, cache cleared first) through `ctx` and return
/// the requested activations, one row per token.
pub fn run(ctx: &mut Context, tokens: &[i32], req: &Request) -> Result<Capture> {
    run_input(ctx, Input::Tokens(tokens), 0, req)
}

/// Like [`run`], with input embeddings (`rows × n_embd`, row-major) fed to the first layer in
/// place of token embeddings: how a single layer cut out of a model runs on the residual
/// stream captured from the full one.
pub fn run_embeddings(ctx: &mut Context, rows: &Matrix, req: &Request) -> Result<Capture> {
    run_input(ctx, Input::Embeddings(rows), 0, req)
}

/// Captures of conversations that start alike (the system prompt and the template's text):
/// the tokens before the rows a caller needs stay in the KV cache (sequence 0) between runs,
/// so each conversation decodes only what differs from the one before.
#[derive(Debug, Default)]
pub struct Shared {
    cached: Vec<i32>,
}

impl Shared {
    /// [`run`] for the rows of `tokens[from..]` only (row 0 is token `from`), with
    /// `tokens[..from]` as their context: the part of it the previous run left in `ctx`'s
    /// cache is kept, the rest decoded once.
    pub fn run(
        &mut self,
        ctx: &mut Context,
        tokens: &[i32],
        from: usize,
        req: &Request,
    ) -> Result<Capture> {
        if from >= tokens.len() {
            bail!("no tokens to capture after position {from}");
        }
        let keep = self
            .cached
            .iter()
            .zip(&tokens[..from])
            .take_while(|(a, b)| a == b)
            .count();
        if keep == 0 {
            ctx.clear();
        } else {
            ctx.remove(0, keep as i32, -1);
        }
        self.cached.truncate(keep);
        ctx.prefill(&tokens[keep..from], keep, 0)?;
        self.cached.extend_from_slice(&tokens[keep..from]);
        run_input(ctx, Input::Tokens(&tokens[from..]), from, req)
    }
}

enum Input<'a> {
    Tokens(&'a [i32]),
    Embeddings(&'a Matrix),
}

/// Decode `input` at positions `start..` of sequence 0 and collect `req`; with `start` 0 the
/// cache is cleared first, else it must hold the first `start` positions and nothing after.
fn run_input(ctx: &mut Context, input: Input, start: usize, req: &Request) -> Result<Capture> {
    let arch = ctx.model().info().arch.clone();
    let n_head = ctx.model().info().n_head;
    let n_tokens = match input {
        Input::Tokens(t) => t.len(),
        Input::Embeddings(m) => m.rows,
    };
    if n_tokens > ctx.n_batch() as usize {
        bail!(
            "a conversation of {n_tokens} tokens exceeds the capture batch of {}",
            ctx.n_batch()
        );
    }
    let mut names = HashSet::new();
    let mut wanted = Vec::new();
    for &(kind, layer) in &req.items {
        let Some(base) = node_name(&arch, kind)? else {
            bail!("{arch} has no graph node for {kind:?}");
        };
        let full = format!("{base}-{layer}");
        names.insert(full.clone());
        wanted.push((kind, layer, full));
    }
    if start == 0 {
        ctx.clear();
    }
    let last = req.items.iter().map(|&(_, l)| l).max();
    match last {
        Some(last) if req.stop_early && !req.logits => ctx.set_capture_until(names, last),
        _ => ctx.set_capture(names),
    }
    // Logits for every token keep every row of the last layer (llama.cpp drops non-output rows).
    let all_rows = req.logits || last.is_some_and(|l| l + 1 == ctx.model().info().n_layer);
    let out_row = |i: usize| all_rows || i + 1 == n_tokens;
    let batch = match input {
        Input::Tokens(tokens) => {
            let mut batch = Batch::new(n_tokens);
            for (i, &t) in tokens.iter().enumerate() {
                batch.push(t, (start + i) as i32, 0, out_row(i));
            }
            batch
        }
        Input::Embeddings(m) => {
            let n_embd = ctx.model().info().n_embd;
            if m.cols != n_embd {
                bail!(
                    "input embeddings have {} values per row, the model {n_embd}",
                    m.cols
                );
            }
            let mut batch = Batch::embeddings(n_tokens, n_embd);
            for i in 0..n_tokens {
                batch.push_embedding(m.row(i), (start + i) as i32, 0, out_row(i));
            }
            batch
        }
    };
    ctx.decode(&batch)?;
    let mut got = ctx.take_captured()?;
    let mut out = Capture {
        n_head,
        ..Default::default()
    };
    for (kind, layer, full) in wanted {
        let c = got
            .remove(&full)
            .with_context(|| format!("llama.cpp did not compute node {full}"))?;
        out.tensors
            .insert((kind, layer), to_matrix(kind, c, n_tokens)?);
    }
    if req.logits {
        let n_vocab = ctx.model().info().n_vocab;
        let mut data = Vec::with_capacity(n_tokens * n_vocab);
        for i in 0..n_tokens {
            data.extend_from_slice(ctx.logits(i)?);
        }
        out.logits = Some(Matrix {
            rows: n_tokens,
            cols: n_vocab,
            data,
        });
    }
    Ok(out)
}

fn to_matrix(kind: Kind, c: Captured, n_tokens: usize) -> Result<Matrix> {
    let [ne0, ne1, ne2, ne3] = c.ne;
    if kind == Kind::AttnProbs {
        // [n_kv, n_tokens, n_head]: rows = head·query, cols = key positions.
        if ne1 != n_tokens {
            bail!("attention probabilities have {ne1} query rows, expected {n_tokens}");
        }
        return Ok(Matrix {
            rows: ne1 * ne2 * ne3,
            cols: ne0,
            data: c.data,
        });
    }
    // Token axis is the outermost non-trivial one: [w, T] or [hd, heads, T].
    let total = ne0 * ne1 * ne2 * ne3;
    if total % n_tokens != 0 || (ne3 != 1 && ne3 != n_tokens) {
        bail!(
            "captured {kind:?} of shape {:?} does not have {n_tokens} token rows",
            c.ne
        );
    }
    let rows = n_tokens;
    Ok(Matrix {
        rows,
        cols: total / rows,
        data: c.data,
    })
}
