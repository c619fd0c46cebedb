//! The facts about a model that the fits need, read once from its file: widths, and per
//! family (from [`crate::arch`]) whether the graph applies output biases and the post-MLP norm.

use anyhow::{Context as _, Result};

use crate::arch::Family;

/// Architecture facts the methods need.
#[derive(Debug, Clone)]
pub struct Arch {
    /// `general.architecture`
    pub name: String,
    /// blocks
    pub n_layer: usize,
    /// residual width
    pub n_embd: usize,
    /// MLP hidden width
    pub n_ff: usize,
    /// per-head value width
    pub head_dim_v: usize,
    /// llama family: `attn_output.bias` and `ffn_down.bias` are applied when present
    pub has_out_biases: bool,
    /// per-layer weights of the norm after the MLP (gemma3), else empty
    pub ffn_post_norm: Vec<Vec<f32>>,
    /// what the graph multiplies token embeddings by before the first block (gemma3: `√n_embd`)
    pub embed_scale: f32,
}

impl Arch {
    /// Read the facts from `src`; an architecture gguf-sleep does not know is an error.
    pub fn from_file(src: &gguf::GgufFile) -> Result<Arch> {
        let h = src.header();
        let name = h
            .architecture()
            .context("the model has no general.architecture")?;
        let family = Family::of(name)?;
        let n_layer = h
            .arch_u64("block_count")
            .context("the model has no block_count")? as usize;
        let n_embd = h
            .arch_u64("embedding_length")
            .context("no embedding_length")? as usize;
        let n_ff = h
            .arch_u64("feed_forward_length")
            .context("the model has no feed_forward_length")? as usize;
        let mut ffn_post_norm = Vec::new();
        if family.post_ffn_norm {
            for l in 0..n_layer {
                let t = format!("blk.{l}.post_ffw_norm.weight");
                let info = h
                    .tensor(&t)
                    .with_context(|| format!("{name} model without {t}"))?;
                ffn_post_norm.push(crate::engine::dequantize(
                    info.ggml_type,
                    src.tensor_data(info),
                    info.n_elements(),
                )?);
            }
        }
        let n_head = h
            .arch_u64("attention.head_count")
            .context("no attention.head_count")?;
        let head_dim_v = h
            .arch_u64("attention.value_length")
            .unwrap_or(n_embd as u64 / n_head.max(1)) as usize;
        Ok(Arch {
            name: name.to_string(),
            n_layer,
            head_dim_v,
            n_embd,
            n_ff,
            has_out_biases: family.out_biases,
            ffn_post_norm,
            embed_scale: if family.scaled_embeddings {
                (n_embd as f32).sqrt()
            } else {
                1.0
            },
        })
    }
}
