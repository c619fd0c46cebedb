//! The student: the GGUF model as a differentiable forward pass in candle, weight matrices
//! frozen as the file stores them ([`Frozen`]: quantized, dequantized a band at a time through
//! ggml's codecs), with [`LoraSet`] adapters on top.
//!
//! It follows llama.cpp's graph for each family the architecture table gives a
//! [`StudentGraph`]: RMSNorm → grouped-query attention (Q/K/V biases where the file has them,
//! scores scaled by 1/√head_dim) with RoPE → residual → RMSNorm → gated MLP → residual, and per
//! family:
//! - `llama`: RoPE in llama.cpp's "normal" (adjacent pairs) layout, as the GGUF converter
//!   permutes Q/K for, frequencies divided by `rope_freqs.weight` where the file has one
//!   (Llama 3's scaling); SiLU gate; `attn_output`/`ffn_down` biases where present.
//! - `qwen2`: NeoX RoPE (halves); `qwen3`: NeoX RoPE and per-head RMSNorm on Q and K.
//! - `gemma3`: embeddings scaled by √n_embd; Q/K norms; NeoX RoPE with base 10 000 on
//!   sliding-window layers and the file's base on every sixth (global) layer; post-attention and
//!   post-MLP RMSNorms; GELU(tanh)-gated MLP.
//!
//! Sequences are shorter than Gemma-3's 512-token window, so the sliding window never masks.

pub mod frozen;
pub mod fused;

use anyhow::{bail, Context as _, Result};
use candle_core::{Device, Tensor, D};
use gguf::GgufFile;
use ndarray::Array2;
use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use super::lora::{LoraSet, Targets};
use crate::arch::{Family, StudentGraph};
use crate::engine::dequantize;
pub use frozen::Frozen;

/// Hyper-parameters read from the GGUF header.
#[derive(Debug, Clone)]
pub struct Config {
    /// the architecture's row of the table
    pub family: &'static Family,
    /// what the student's forward pass does for it
    pub graph: StudentGraph,
    /// blocks
    pub n_layer: usize,
    /// residual width
    pub n_embd: usize,
    /// attention heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// size of one head
    pub head_dim: usize,
    /// RMSNorm epsilon
    pub eps: f64,
    /// RoPE base (global layers)
    pub rope_base: f64,
    /// RoPE base of sliding-window layers (gemma3)
    pub rope_base_swa: f64,
    /// every n-th layer is global, the others sliding-window (gemma3); 0 = all global
    pub swa_pattern: usize,
}

impl Config {
    /// Read the configuration; an unsupported architecture is a one-line error.
    pub fn from_file(f: &GgufFile) -> Result<Config> {
        let h = f.header();
        let arch = h
            .architecture()
            .context("the model has no general.architecture")?;
        let family = Family::of(arch)?;
        let Some(graph) = family.student else {
            bail!("bake does not support the {arch} architecture: use `patch` for this model");
        };
        let m = &h.metadata;
        let u = |k: &str| {
            h.arch_u64(k)
                .with_context(|| format!("the model has no {arch}.{k}"))
                .map(|v| v as usize)
        };
        let fv = |k: &str| m.get_f64(&format!("{arch}.{k}"));
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let head_dim = h
            .arch_u64("attention.key_length")
            .map_or(n_embd / n_head.max(1), |v| v as usize);
        let swa = h.arch_u64("attention.sliding_window").unwrap_or(0);
        if let Some(n_rot) = h.arch_u64("rope.dimension_count") {
            if n_rot as usize != head_dim {
                bail!(
                    "bake rotates whole heads; this {arch} model rotates {n_rot} of {head_dim} \
                     values a head: use `patch` for it"
                );
            }
        }
        Ok(Config {
            family,
            graph,
            n_layer: u("block_count")?,
            n_embd,
            n_head,
            n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
            head_dim,
            eps: fv("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_base: fv("rope.freq_base").unwrap_or(10_000.0),
            rope_base_swa: fv("rope.freq_base_swa").unwrap_or(10_000.0),
            swa_pattern: if family.sliding_window && swa > 0 {
                h.arch_u64("attention.sliding_window_pattern").unwrap_or(6) as usize
            } else {
                0
            },
        })
    }

    /// Whether `layer` is a sliding-window layer (its RoPE base is `rope_base_swa`).
    fn sliding(&self, layer: usize) -> bool {
        self.swa_pattern > 0 && layer % self.swa_pattern < self.swa_pattern - 1
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Frozen,
    k: Frozen,
    v: Frozen,
    o: Frozen,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Frozen,
    up: Frozen,
    down: Frozen,
    post_ffn_norm: Option<Tensor>,
    /// biases the file applies after a projection (`blk.{l}.{kind}.bias`, e.g. ones `patch`
    /// created), by projection kind
    bias: BTreeMap<&'static str, Tensor>,
}

/// What is recorded of the adapted matrices' inputs.
#[derive(Default)]
struct Recorded {
    /// per weight matrix: the sum of squared inputs per column, and how many rows were summed
    power: BTreeMap<String, (Vec<f64>, usize)>,
    /// per input (matrices that read the same input share it, see [`input_of`]): `Σ x xᵀ`,
    /// when asked for
    grams: Option<BTreeMap<String, Array2<f32>>>,
}

/// The input a matrix reads: `blk.{l}.attn_q.weight`, `attn_k` and `attn_v` read the same
/// (`blk.{l}.attn_in`), as do `ffn_gate` and `ffn_up` (`blk.{l}.ffn_in`); any other its own.
pub fn input_of(name: &str) -> String {
    let base = name.strip_suffix(".weight").unwrap_or(name);
    for (kinds, shared) in [
        (&["attn_q", "attn_k", "attn_v"][..], "attn_in"),
        (&["ffn_gate", "ffn_up"][..], "ffn_in"),
    ] {
        for k in kinds {
            if let Some(prefix) = base.strip_suffix(k) {
                return format!("{prefix}{shared}");
            }
        }
    }
    base.to_string()
}

/// Whether `name`'s inputs are summed into its input's Gram: matrices that share an input are
/// summed once, at the first of them (`attn_q`, `ffn_gate`; every target set that adapts one of
/// the others adapts that one too).
fn sums_input(name: &str) -> bool {
    !["attn_k", "attn_v", "ffn_up"]
        .iter()
        .any(|k| name.strip_suffix(".weight").unwrap_or(name).ends_with(k))
}

/// The frozen model.
pub struct Student {
    cfg: Config,
    embd: Frozen,
    /// the blocks; `None` once released ([`Student::release_layer`])
    layers: Vec<Option<Layer>>,
    out_norm: Tensor,
    head: Frozen,
    /// Llama 3's per-pair RoPE frequency divisors (`rope_freqs.weight`), where used
    rope_freqs: Option<Vec<f32>>,
    /// when set, the inputs of every adapted matrix are summed here (importance weights, Grams)
    record: Mutex<Option<Recorded>>,
    /// quantization-aware training: an adapted matrix as it will be stored, `Q(W + B·A)`
    quantized: RwLock<BTreeMap<String, Frozen>>,
}

/// Dequantize the 1-D (or small) tensor `name` of `f` into a candle tensor of `shape`.
fn load(f: &GgufFile, name: &str, shape: &[usize]) -> Result<Tensor> {
    let info = f
        .header()
        .tensor(name)
        .with_context(|| format!("the model has no tensor {name}"))?;
    let want: usize = shape.iter().product();
    if info.n_elements() as usize != want {
        bail!("{name} has {} values, expected {want}", info.n_elements());
    }
    let v = dequantize(info.ggml_type, f.tensor_data(info), info.n_elements())
        .with_context(|| format!("cannot dequantize {name}"))?;
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// The weight matrix `name` of `f` (`rows × cols`), kept as stored.
fn matrix(f: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Frozen> {
    let info = f
        .header()
        .tensor(name)
        .with_context(|| format!("the model has no tensor {name}"))?;
    if (info.ne0(), info.n_rows()) != (cols as u64, rows as u64) {
        bail!(
            "{name} has shape {:?}, expected [{cols}, {rows}]",
            info.dims
        );
    }
    Frozen::new(info.ggml_type, f.tensor_data(info).to_vec(), rows, cols)
        .with_context(|| format!("cannot read {name}"))
}

impl Student {
    /// Load `f`: weight matrices as stored, norms and biases in f32. The file's pages are
    /// released afterwards (the student holds its own copy of what it needs).
    pub fn load(f: &GgufFile) -> Result<Student> {
        let cfg = Config::from_file(f)?;
        let d = cfg.n_embd;
        let h = f.header();
        let n_vocab = h
            .tensor("token_embd.weight")
            .context("the model has no token_embd.weight")?
            .n_rows() as usize;
        let n_ff = h
            .arch_u64("feed_forward_length")
            .context("no feed_forward_length")? as usize;
        let (nq, nkv) = (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim);
        let embd = matrix(f, "token_embd.weight", n_vocab, d)?;
        let head = match h.tensor("output.weight") {
            Some(_) => matrix(f, "output.weight", n_vocab, d)?,
            None => embd.clone(),
        };
        let g = cfg.graph;
        let rope_freqs = match h.tensor("rope_freqs.weight") {
            Some(_) if g.rope_freqs => {
                Some(load(f, "rope_freqs.weight", &[cfg.head_dim / 2])?.to_vec1::<f32>()?)
            }
            _ => None,
        };
        // The biases llama.cpp's graph adds: Q/K/V's wherever a file has them, the two that
        // write into the residual only in families whose graph adds them.
        let biased: Vec<&str> = Targets::All
            .kinds()
            .iter()
            .copied()
            .filter(|k| cfg.family.out_biases || !["attn_output", "ffn_down"].contains(k))
            .collect();
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let t = |k: &str| format!("blk.{l}.{k}.weight");
            let mut bias = BTreeMap::new();
            for &kind in &biased {
                let name = format!("blk.{l}.{kind}.bias");
                if let Some(info) = h.tensor(&name) {
                    bias.insert(kind, load(f, &name, &[info.n_elements() as usize])?);
                }
            }
            let opt = |used: bool, k: &str, n: usize| -> Result<Option<Tensor>> {
                used.then(|| load(f, &t(k), &[n])).transpose()
            };
            layers.push(Some(Layer {
                attn_norm: load(f, &t("attn_norm"), &[d])?,
                q: matrix(f, &t("attn_q"), nq, d)?,
                k: matrix(f, &t("attn_k"), nkv, d)?,
                v: matrix(f, &t("attn_v"), nkv, d)?,
                o: matrix(f, &t("attn_output"), d, nq)?,
                q_norm: opt(g.qk_norm, "attn_q_norm", cfg.head_dim)?,
                k_norm: opt(g.qk_norm, "attn_k_norm", cfg.head_dim)?,
                post_attn_norm: opt(g.post_attn_norm, "post_attention_norm", d)?,
                ffn_norm: load(f, &t("ffn_norm"), &[d])?,
                gate: matrix(f, &t("ffn_gate"), n_ff, d)?,
                up: matrix(f, &t("ffn_up"), n_ff, d)?,
                down: matrix(f, &t("ffn_down"), d, n_ff)?,
                post_ffn_norm: opt(cfg.family.post_ffn_norm, "post_ffw_norm", d)?,
                bias,
            }));
        }
        let out_norm = load(f, "output_norm.weight", &[d])?;
        f.release_pages();
        Ok(Student {
            out_norm,
            cfg,
            embd,
            layers,
            head,
            rope_freqs,
            record: Mutex::new(None),
            quantized: RwLock::new(BTreeMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `(n_out, n_in)` of the weight matrix `blk.{layer}.{kind}.weight`.
    pub fn matrix_shape(&self, layer: usize, kind: &str) -> Result<(usize, usize)> {
        Ok(self.matrix(layer, kind)?.shape())
    }

    /// Use `w` (`Q(W + B·A)` as it will be stored) for the adapted matrix `name` in the forward
    /// pass, with the adapter's gradient passed straight through (quantization-aware training).
    pub fn set_quantized(&self, name: &str, w: Frozen) {
        self.quantized
            .write()
            .expect("not poisoned")
            .insert(name.to_string(), w);
    }

    /// Forget every matrix set by [`Student::set_quantized`]: the forward pass uses the frozen
    /// weights again.
    pub fn clear_quantized(&self) {
        self.quantized.write().expect("not poisoned").clear();
    }

    /// The original weight matrix `blk.{layer}.{kind}.weight`, as stored.
    pub fn original(&self, layer: usize, kind: &str) -> Result<&Frozen> {
        self.matrix(layer, kind)
    }

    /// Drop layer `l`'s weights: a pass that has gone beyond it (the merged write's, layer by
    /// layer) frees them; any later use of the layer is an error.
    pub fn release_layer(&mut self, l: usize) {
        if let Some(slot) = self.layers.get_mut(l) {
            *slot = None;
        }
        let prefix = format!("blk.{l}.");
        self.quantized
            .get_mut()
            .expect("not poisoned")
            .retain(|name, _| !name.starts_with(&prefix));
    }

    fn layer(&self, l: usize) -> Result<&Layer> {
        match self.layers.get(l) {
            Some(Some(layer)) => Ok(layer),
            Some(None) => bail!("layer {l} of the student was released"),
            None => bail!("no layer {l}"),
        }
    }

    fn matrix(&self, layer: usize, kind: &str) -> Result<&Frozen> {
        let l = self.layer(layer)?;
        Ok(match kind {
            "attn_q" => &l.q,
            "attn_k" => &l.k,
            "attn_v" => &l.v,
            "attn_output" => &l.o,
            "ffn_gate" => &l.gate,
            "ffn_up" => &l.up,
            "ffn_down" => &l.down,
            _ => bail!("no weight matrix {kind}"),
        })
    }

    /// Logits at the flattened positions `out_idx` (indices into `batch × seq`) of the padded
    /// token matrix `tokens` (`batch × seq`, u32), with the adapters of `lora` applied.
    /// Each row attends to its own earlier tokens only, so right padding changes nothing.
    pub fn logits(&self, tokens: &Tensor, out_idx: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        let mut x = self.embed(tokens)?;
        for l in 0..self.layers.len() {
            x = self.layer_forward(l, &x, lora)?;
        }
        self.head(&x, out_idx)
    }

    /// The logits at the flattened positions `out_idx` of the residual stream `x` leaving the
    /// last layer (`batch × seq × n_embd`): the output norm and head.
    pub fn head(&self, x: &Tensor, out_idx: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = x.reshape((b * t, d))?.index_select(out_idx, 0)?;
        let h = fused::rms_norm(&h, &self.out_norm, self.cfg.eps)?;
        Ok(self.head.forward(&h)?)
    }

    /// The residual stream entering layer 0 for the token matrix `tokens` (`batch × seq`, u32):
    /// `batch × seq × n_embd`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let d = self.cfg.n_embd;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        let x = self.embd.rows(&ids)?.reshape((b, t, d))?;
        if self.cfg.family.scaled_embeddings {
            return Ok((x * (d as f64).sqrt())?);
        }
        Ok(x)
    }

    /// Layer `l` alone on the residual stream `x` (as [`Student::embed`] or the layer before
    /// left it), with no gradient kept; recorded inputs ([`Student::record_inputs`]) are
    /// observed as in [`Student::logits`]. One layer at a time, a pass over many trajectories
    /// holds one residual stream per trajectory instead of every layer's activations.
    pub fn advance(&self, l: usize, x: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        Ok(self.layer_forward(l, x, lora)?.detach())
    }

    /// Layer `l` on the residual stream `x`, its autograd graph kept: a gradient through one
    /// layer, as recomputation takes it.
    pub fn layer_forward(&self, l: usize, x: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        let layer = self.layer(l)?;
        let (global, sliding) = self.rope_tables(x.dim(1)?);
        let rope = if self.cfg.sliding(l) {
            &sliding
        } else {
            &global
        };
        self.block(l, layer, x, rope, lora)
    }

    /// The rotary tables of `t` positions: global layers', sliding-window layers'.
    fn rope_tables(&self, t: usize) -> (fused::RopeTables, fused::RopeTables) {
        let (hd, ff) = (self.cfg.head_dim, self.rope_freqs.as_deref());
        (
            fused::RopeTables::new(t, hd, self.cfg.rope_base, ff),
            fused::RopeTables::new(t, hd, self.cfg.rope_base_swa, ff),
        )
    }

    fn linear(
        &self,
        w: &Frozen,
        l: usize,
        kind: &str,
        x: &Tensor,
        lora: &LoraSet,
    ) -> Result<Tensor> {
        let mut y = self.project(w, l, kind, x, lora)?;
        if let Some(b) = self.layer(l)?.bias.get(kind) {
            y = y.broadcast_add(b)?;
        }
        if let Some(db) = lora.bias(&format!("blk.{l}.{kind}.bias")) {
            y = y.broadcast_add(db)?;
        }
        Ok(y)
    }

    /// `x·Wᵀ` with the adapter of `blk.{l}.{kind}.weight`, without the bias.
    fn project(
        &self,
        w: &Frozen,
        l: usize,
        kind: &str,
        x: &Tensor,
        lora: &LoraSet,
    ) -> Result<Tensor> {
        let name = format!("blk.{l}.{kind}.weight");
        let Some(dy) = lora.apply(&name, x)? else {
            return Ok(w.forward(x)?);
        };
        self.observe(&name, x)?;
        let q = self
            .quantized
            .read()
            .expect("not poisoned")
            .get(&name)
            .cloned();
        match q {
            // Value x·Q(W+BA)ᵀ, gradient of x·(W+BA)ᵀ (straight-through).
            Some(wq) => Ok((wq.forward(x)? + (&dy - dy.detach())?)?),
            None => Ok((w.forward(x)? + dy)?),
        }
    }

    /// Start summing the squared inputs of adapted matrices (see [`Student::take_inputs`]),
    /// and with `grams` their Gram matrices.
    pub fn record_inputs(&self, grams: bool) {
        *self.record.lock().expect("not poisoned") = Some(Recorded {
            power: BTreeMap::new(),
            grams: grams.then(BTreeMap::new),
        });
    }

    /// Stop recording. Returns, per adapted matrix, the mean squared input per column (the
    /// importance weights ggml's quantizer takes, what llama.cpp's imatrix tool computes), and,
    /// when asked for, per input ([`input_of`]) `Σ x xᵀ` over the rows seen.
    pub fn take_inputs(&self) -> (BTreeMap<String, Vec<f32>>, BTreeMap<String, Array2<f32>>) {
        let rec = self
            .record
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or_default();
        let importance = rec
            .power
            .into_iter()
            .map(|(k, (sum, n))| {
                (
                    k,
                    sum.iter().map(|s| (s / n.max(1) as f64) as f32).collect(),
                )
            })
            .collect();
        (importance, rec.grams.unwrap_or_default())
    }

    fn observe(&self, name: &str, x: &Tensor) -> Result<()> {
        let mut guard = self.record.lock().expect("not poisoned");
        let Some(rec) = guard.as_mut() else {
            return Ok(());
        };
        let n_in = x.dim(D::Minus1)?;
        let rows = x.elem_count() / n_in;
        let x = x.detach().reshape((rows, n_in))?;
        if let Some(grams) = rec.grams.as_mut() {
            let input = input_of(name);
            if sums_input(name) {
                let g = x.t()?.matmul(&x)?.to_vec2::<f32>()?;
                let acc = grams
                    .entry(input)
                    .or_insert_with(|| Array2::zeros((n_in, n_in)));
                for (i, row) in g.iter().enumerate() {
                    for (a, b) in acc.row_mut(i).iter_mut().zip(row) {
                        *a += b;
                    }
                }
            }
        }
        let sq = x.sqr()?.sum(0)?.to_vec1::<f32>()?;
        let e = rec
            .power
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; n_in], 0));
        for (a, b) in e.0.iter_mut().zip(sq) {
            *a += f64::from(b);
        }
        e.1 += rows;
        Ok(())
    }

    fn block(
        &self,
        l: usize,
        ly: &Layer,
        x: &Tensor,
        rope: &fused::RopeTables,
        lora: &LoraSet,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let hd = c.head_dim;
        let g = c.graph;
        let h = fused::rms_norm(x, &ly.attn_norm, c.eps)?;
        let q = self
            .linear(&ly.q, l, "attn_q", &h, lora)?
            .reshape((b, t, c.n_head, hd))?;
        let k = self
            .linear(&ly.k, l, "attn_k", &h, lora)?
            .reshape((b, t, c.n_head_kv, hd))?;
        let v = self
            .linear(&ly.v, l, "attn_v", &h, lora)?
            .reshape((b, t, c.n_head_kv, hd))?;
        let (q, k) = match (&ly.q_norm, &ly.k_norm) {
            (Some(qn), Some(kn)) => (
                fused::rms_norm(&q, qn, c.eps)?,
                fused::rms_norm(&k, kn, c.eps)?,
            ),
            _ => (q, k),
        };
        let q = q.transpose(1, 2)?.contiguous()?; // b, heads, t, hd
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let q = fused::rope(&q, rope, g.neox_rope)?;
        let k = fused::rope(&k, rope, g.neox_rope)?;
        // The query heads that share a key head (llama.cpp groups them consecutively) are
        // stacked along the rows: (b, kv, rep·t, hd), row r at position r mod t.
        let rep = c.n_head / c.n_head_kv;
        let q = q.reshape((b, c.n_head_kv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let p = fused::causal_softmax(&q.matmul(&k.t()?)?, scale)?;
        let a = p
            .matmul(&v)?
            .reshape((b, c.n_head, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, c.n_head * hd))?;
        let mut a = self.linear(&ly.o, l, "attn_output", &a, lora)?;
        if let Some(n) = &ly.post_attn_norm {
            a = fused::rms_norm(&a, n, c.eps)?;
        }
        let x = (x + a)?;
        let h = fused::rms_norm(&x, &ly.ffn_norm, c.eps)?;
        let gate = self.linear(&ly.gate, l, "ffn_gate", &h, lora)?;
        let gate = if g.gelu { gate.gelu()? } else { gate.silu()? };
        let u = self.linear(&ly.up, l, "ffn_up", &h, lora)?;
        let mut m = self.linear(&ly.down, l, "ffn_down", &(gate * u)?, lora)?;
        if let Some(n) = &ly.post_ffn_norm {
            m = fused::rms_norm(&m, n, c.eps)?;
        }
        Ok((x + m)?)
    }
}
