//! The sleep value correction (Ye 2025, eq. 10): per layer and KV head
//! `V_delta = α·(β·V̄_sys − V̄)`, written as `attn_v.bias`.
//!
//! Measured, not guessed, from the calibration conversations:
//! - `α` is the attention mass that the aligned (user and reply) queries of the prompted run put
//!   on the system-prompt tokens, averaged over queries and over the query heads sharing the KV
//!   head. The first token is left out of the system span: it is the attention sink (it takes a
//!   large share of every head's attention whatever it holds, with or without a prompt).
//! - `V̄_sys` is the value vector the prompted run reads from the system span: the
//!   attention-weighted mean of the system tokens' values under those same queries.
//! - `V̄` is the mean value vector of the aligned tokens in the unprompted run.
//! - `β` scales the prompt (1 = as pre-filled).

use anyhow::Result;

use super::facts::Arch;
use super::fit::{slice_rows, Progress};
use super::method::Rows;
use super::options::PatchOptions;
use super::report::LayerReport;
use crate::capture::{self, Kind, Request};
use crate::engine::{Context, ContextOptions, Model};
use crate::material::Pair;
use crate::store::Delta;

/// Running sums for one layer.
#[derive(Debug, Clone)]
pub struct SleepStats {
    head_dim: usize,
    n_head: usize,
    n_head_kv: usize,
    /// per KV head: Σ attention mass on the system span
    mass: Vec<f64>,
    /// per KV head: Σ queries (× heads in the group)
    queries: Vec<f64>,
    /// per KV head: Σ p·v over the system span
    vsys: Vec<Vec<f64>>,
    /// per KV head: Σ v over unprompted aligned tokens
    vbar: Vec<Vec<f64>>,
    tokens: f64,
}

impl SleepStats {
    /// Empty sums.
    pub fn new(head_dim: usize, n_head: usize, n_head_kv: usize) -> SleepStats {
        SleepStats {
            head_dim,
            n_head,
            n_head_kv,
            mass: vec![0.0; n_head_kv],
            queries: vec![0.0; n_head_kv],
            vsys: vec![vec![0.0; head_dim]; n_head_kv],
            vbar: vec![vec![0.0; head_dim]; n_head_kv],
            tokens: 0.0,
        }
    }

    /// Add one conversation. `p_full` holds the prompted run's attention probabilities and
    /// values for every token (not only the aligned ones); `sys` is the system span
    /// `[1, aligned start)`; `q0..q0+len` are the aligned queries; `u` holds the unprompted
    /// aligned values.
    pub fn add(
        &mut self,
        l: usize,
        p_full: &Rows,
        sys: std::ops::Range<usize>,
        q0: usize,
        len: usize,
        u: &Rows,
    ) -> Result<()> {
        let probs = p_full
            .get(&(Kind::AttnProbs, l))
            .ok_or_else(|| anyhow::anyhow!("internal: attention of layer {l} not captured"))?;
        let vals = p_full
            .get(&(Kind::Value, l))
            .ok_or_else(|| anyhow::anyhow!("internal: values of layer {l} not captured"))?;
        let uv = u
            .get(&(Kind::Value, l))
            .ok_or_else(|| anyhow::anyhow!("internal: values of layer {l} not captured"))?;
        let t = vals.rows;
        let group = self.n_head / self.n_head_kv;
        let hd = self.head_dim;
        for h in 0..self.n_head {
            let g = h / group;
            for q in q0..q0 + len {
                let row = probs.row(h * t + q);
                for j in sys.clone() {
                    let pj = row[j] as f64;
                    self.mass[g] += pj;
                    let v = &vals.row(j)[g * hd..(g + 1) * hd];
                    for (acc, &x) in self.vsys[g].iter_mut().zip(v) {
                        *acc += pj * x as f64;
                    }
                }
                self.queries[g] += 1.0;
            }
        }
        for r in 0..uv.rows {
            for g in 0..self.n_head_kv {
                for (acc, &x) in self.vbar[g]
                    .iter_mut()
                    .zip(&uv.row(r)[g * hd..(g + 1) * hd])
                {
                    *acc += x as f64;
                }
            }
        }
        self.tokens += uv.rows as f64;
        Ok(())
    }

    /// Measured α per KV head.
    pub fn alpha(&self) -> Vec<f64> {
        self.mass
            .iter()
            .zip(&self.queries)
            .map(|(m, q)| m / q.max(1.0))
            .collect()
    }

    /// The value-bias edit of layer `l`; `alpha` overrides the measured α where given.
    pub fn delta(&self, l: usize, alpha: Option<f64>, beta: f64) -> Delta {
        let measured = self.alpha();
        let mut values = Vec::with_capacity(self.n_head_kv * self.head_dim);
        for (g, &m) in measured.iter().enumerate() {
            let a = alpha.unwrap_or(m);
            for (vs, vb) in self.vsys[g].iter().zip(&self.vbar[g]) {
                let vsys = vs / self.mass[g].max(1e-30);
                let vbar = vb / self.tokens.max(1.0);
                values.push((a * (beta * vsys - vbar)) as f32);
            }
        }
        Delta::Bias {
            tensor: format!("blk.{l}.attn_v.bias"),
            after: format!("blk.{l}.attn_v.weight"),
            values,
        }
    }
}
/// Measure every layer's statistics over `pairs` (one capture pass) and turn them into
/// `attn_v.bias` deltas.
pub fn fit(
    model: &Model,
    arch: &Arch,
    copts: &ContextOptions,
    pairs: &[Pair],
    layers: &[usize],
    opts: &PatchOptions,
    progress: Progress,
) -> Result<(Vec<Delta>, Vec<LayerReport>)> {
    let info = model.info();
    let head_dim = arch.head_dim_v;
    let mut stats: Vec<SleepStats> = layers
        .iter()
        .map(|_| SleepStats::new(head_dim, info.n_head, info.n_head_kv))
        .collect();
    let mut ctx = Context::new(model, copts)?;
    let mut preq = Request::new(&[Kind::AttnProbs, Kind::Value], layers.iter().copied());
    let mut ureq = Request::new(&[Kind::Value], layers.iter().copied());
    (preq.stop_early, ureq.stop_early) = (true, true);
    for (i, p) in pairs.iter().enumerate() {
        let pc = capture::run(&mut ctx, &p.prompted, &preq)?;
        let prows: Rows = pc.tensors;
        let u = slice_rows(
            capture::run(&mut ctx, &p.unprompted, &ureq)?,
            p.align.unprompted_start,
            p.align.len,
        );
        for (s, &l) in stats.iter_mut().zip(layers) {
            s.add(
                l,
                &prows,
                1..p.align.prompted_start,
                p.align.prompted_start,
                p.align.len,
                &u,
            )?;
        }
        progress("capture", i + 1, pairs.len());
    }
    let deltas = stats
        .iter()
        .zip(layers)
        .map(|(s, &l)| s.delta(l, opts.alpha, opts.beta))
        .collect();
    let reports = stats
        .iter()
        .zip(layers)
        .map(|(s, &l)| LayerReport {
            layer: l,
            lambda: None,
            val_rel_error: None,
            alpha: Some(s.alpha()),
        })
        .collect();
    Ok((deltas, reports))
}
