//! Random-weight models with the tensors and metadata llama.cpp expects for an architecture,
//! at given dimensions: what time and memory are measured on at sizes no test model has
//! (weight values do not change the cost). The tokenizer, and so the vocabulary, is copied
//! from a real model's file.

use anyhow::{bail, Context as _, Result};
use gguf::{GgmlType, GgufFile, Metadata, NewTensor, Value, WriteOptions};
use half::f16;
use std::path::Path;

/// The dimensions of a model to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    /// `general.architecture`: llama, qwen2, qwen3 or gemma3
    pub arch: String,
    /// blocks
    pub n_layer: usize,
    /// residual width
    pub n_embd: usize,
    /// MLP hidden width
    pub n_ff: usize,
    /// attention heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// size of one head
    pub head_dim: usize,
    /// training context length recorded
    pub n_ctx: usize,
    /// the scale of the output norm and of the queries (the query projection, or the Q norm
    /// where the family has one): 1 gives near-uniform next-token distributions and attention,
    /// larger makes both peaked (what a test of a forward pass needs: a uniform one matches
    /// anything)
    pub sharpen: f32,
    /// llama: write a `rope_freqs.weight` (Llama 3's RoPE scaling: low frequencies divided by
    /// up to 8)
    pub rope_freqs: bool,
}

impl Dims {
    /// `arch` at these sizes, plain weights (`sharpen` 1), no `rope_freqs`.
    pub fn plain(
        arch: &str,
        n_layer: usize,
        n_embd: usize,
        n_ff: usize,
        heads: [usize; 3],
    ) -> Dims {
        Dims {
            arch: arch.into(),
            n_layer,
            n_embd,
            n_ff,
            n_head: heads[0],
            n_head_kv: heads[1],
            head_dim: heads[2],
            n_ctx: 4096,
            sharpen: 1.0,
            rope_freqs: false,
        }
    }
}

/// Llama 3's RoPE frequency divisors for `half` pairs, in the shape of its `rope_freqs`: the
/// first third unscaled, the last third divided by 8, a smooth ramp between.
pub fn llama3_rope_freqs(half: usize) -> Vec<f32> {
    let third = (half / 3).max(1) as f32;
    (0..half)
        .map(|i| 1.0 + 7.0 * ((i as f32 - third) / third).clamp(0.0, 1.0))
        .collect()
}

/// A deterministic normal-ish draw (sum of uniforms from an LCG), scaled by `std`.
struct Draw(u64);

impl Draw {
    fn next(&mut self, std: f32) -> f32 {
        let mut s = 0.0;
        for _ in 0..4 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s += (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        s * std * 1.732
    }
}

/// Write a random-weight model of `dims` to `out` (matrices F16, norms F32), with the
/// tokenizer of `tokenizer`; `seed` fixes the weights.
pub fn write_random(dims: &Dims, tokenizer: &GgufFile, out: &Path, seed: u64) -> Result<()> {
    let a = dims.arch.as_str();
    if !matches!(a, "llama" | "qwen2" | "qwen3" | "gemma3") {
        bail!("random models are made for llama, qwen2, qwen3 and gemma3, not {a}");
    }
    if dims.n_head == 0 || dims.n_head_kv == 0 || dims.n_head % dims.n_head_kv != 0 {
        bail!("the attention heads must be a positive multiple of the key/value heads");
    }
    let th = tokenizer.header();
    let n_vocab = match th.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(t)) => t.len(),
        _ => bail!("the tokenizer model has no tokenizer.ggml.tokens"),
    };
    let mut m = Metadata::new();
    m.set("general.architecture", a);
    m.set(
        "general.name",
        format!("random {a} {}x{}", dims.n_layer, dims.n_embd),
    );
    m.set("general.file_type", 1u32); // MOSTLY_F16
    let u = |v: usize| v as u32;
    m.set(format!("{a}.context_length"), u(dims.n_ctx));
    m.set(format!("{a}.embedding_length"), u(dims.n_embd));
    m.set(format!("{a}.block_count"), u(dims.n_layer));
    m.set(format!("{a}.feed_forward_length"), u(dims.n_ff));
    m.set(format!("{a}.attention.head_count"), u(dims.n_head));
    m.set(format!("{a}.attention.head_count_kv"), u(dims.n_head_kv));
    m.set(format!("{a}.attention.key_length"), u(dims.head_dim));
    m.set(format!("{a}.attention.value_length"), u(dims.head_dim));
    m.set(format!("{a}.attention.layer_norm_rms_epsilon"), 1e-6f32);
    m.set(format!("{a}.rope.freq_base"), 10_000f32);
    if a == "llama" {
        m.set(format!("{a}.rope.dimension_count"), u(dims.head_dim));
    }
    if a == "gemma3" {
        m.set(format!("{a}.attention.sliding_window"), 512u32);
    }
    for (k, v) in &th.metadata {
        if k.starts_with("tokenizer.") {
            m.set(k, v.clone());
        }
    }
    let mut draw = Draw(seed ^ 0x5eed);
    let mut tensors = Vec::new();
    let matrix = |name: String, n_in: usize, n_out: usize, draw: &mut Draw| {
        let std = 1.0 / (n_in as f32).sqrt();
        let data: Vec<u8> = (0..n_in * n_out)
            .flat_map(|_| f16::from_f32(draw.next(std)).to_le_bytes())
            .collect();
        NewTensor {
            name,
            dims: vec![n_in as u64, n_out as u64],
            ggml_type: GgmlType::F16,
            data,
            after: None,
        }
    };
    let ones = |name: String, n: usize| NewTensor {
        name,
        dims: vec![n as u64],
        ggml_type: GgmlType::F32,
        data: (0..n).flat_map(|_| 1f32.to_le_bytes()).collect(),
        after: None,
    };
    let filled = |name: String, v: Vec<f32>| NewTensor {
        name,
        dims: vec![v.len() as u64],
        ggml_type: GgmlType::F32,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        after: None,
    };
    let (d, hd) = (dims.n_embd, dims.head_dim);
    let (q, kv) = (dims.n_head * hd, dims.n_head_kv * hd);
    let k = dims.sharpen;
    let q_norm = matches!(a, "qwen3" | "gemma3");
    // Biases from a stream of their own, so that the matrices' draws do not depend on them.
    let mut bias_draw = Draw(seed ^ 0xb1a5);
    tensors.push(matrix("token_embd.weight".into(), d, n_vocab, &mut draw));
    tensors.push(filled("output_norm.weight".into(), vec![k; d]));
    if a == "llama" && dims.rope_freqs {
        tensors.push(filled(
            "rope_freqs.weight".into(),
            llama3_rope_freqs(hd / 2),
        ));
    }
    for l in 0..dims.n_layer {
        let b = |t: &str| format!("blk.{l}.{t}");
        tensors.push(ones(b("attn_norm.weight"), d));
        let mut wq = matrix(b("attn_q.weight"), d, q, &mut draw);
        if !q_norm && k != 1.0 {
            wq.data = wq
                .data
                .chunks_exact(2)
                .flat_map(|h| {
                    let v = f16::from_le_bytes([h[0], h[1]]).to_f32() * k;
                    f16::from_f32(v).to_le_bytes()
                })
                .collect();
        }
        tensors.push(wq);
        tensors.push(matrix(b("attn_k.weight"), d, kv, &mut draw));
        tensors.push(matrix(b("attn_v.weight"), d, kv, &mut draw));
        tensors.push(matrix(b("attn_output.weight"), q, d, &mut draw));
        if a == "qwen2" {
            for (t, n) in [("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)] {
                let v = (0..n).map(|_| bias_draw.next(0.3)).collect();
                tensors.push(filled(b(t), v));
            }
        }
        if q_norm {
            tensors.push(filled(b("attn_q_norm.weight"), vec![k; hd]));
            tensors.push(ones(b("attn_k_norm.weight"), hd));
        }
        if a == "gemma3" {
            tensors.push(ones(b("post_attention_norm.weight"), d));
            tensors.push(ones(b("post_ffw_norm.weight"), d));
        }
        tensors.push(ones(b("ffn_norm.weight"), d));
        tensors.push(matrix(b("ffn_gate.weight"), d, dims.n_ff, &mut draw));
        tensors.push(matrix(b("ffn_up.weight"), d, dims.n_ff, &mut draw));
        tensors.push(matrix(b("ffn_down.weight"), dims.n_ff, d, &mut draw));
    }
    gguf::write_new(m, tensors, out, &WriteOptions::default())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
