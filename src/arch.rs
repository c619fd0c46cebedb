//! What each architecture needs: one table, read by capture, patch, the layer slicer and bake.
//!
//! A row says which llama.cpp graph nodes hold each per-layer quantity ([`Kind`]), whether the graph adds
//! `attn_output.bias` / `ffn_down.bias` when a file has them, whether the MLP output goes
//! through a norm of its own, whether layers may attend through a sliding window, and which
//! graph the `bake` student follows (none: `bake` refuses the family). Adding a family is
//! adding a row.

use anyhow::{bail, Result};

/// A per-layer quantity that can be captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    /// attention input: the residual after the pre-attention norm
    AttnNorm,
    /// value vectors, `[T × head_dim·n_head_kv]`
    Value,
    /// attention probabilities, `[head][query][key]`
    AttnProbs,
    /// attention output before the output projection
    AttnOutPre,
    /// attention output after the output projection (and post-norm where the arch has one)
    AttnOut,
    /// residual stream after attention (the MLP block's input before its norm)
    Resid,
    /// MLP input after the pre-MLP norm
    MlpIn,
    /// MLP hidden: the gated product that enters the down projection
    MlpHidden,
    /// MLP output (before any post-norm)
    MlpOut,
    /// block output (residual stream after the block)
    BlockOut,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
        Kind::AttnNorm,
        Kind::Value,
        Kind::AttnProbs,
        Kind::AttnOutPre,
        Kind::AttnOut,
        Kind::Resid,
        Kind::MlpIn,
        Kind::MlpHidden,
        Kind::MlpOut,
        Kind::BlockOut,
    ];
}

/// What the `bake` student's forward pass does for a family beyond the common block (RMSNorm,
/// grouped-query attention with RoPE, gated MLP, biases where the file has them); embedding
/// scale, sliding window and the MLP's post-norm are the [`Family`]'s own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudentGraph {
    /// RoPE rotates the halves `(i, i + hd/2)` (llama.cpp's NeoX mode), not adjacent pairs
    pub neox_rope: bool,
    /// per-head RMSNorm on Q and K (`attn_q_norm`, `attn_k_norm`)
    pub qk_norm: bool,
    /// RMSNorm on the attention output before the residual (`post_attention_norm`)
    pub post_attn_norm: bool,
    /// the MLP gate is GELU (tanh approximation), not SiLU
    pub gelu: bool,
    /// RoPE frequencies divided by the file's `rope_freqs.weight` where it has one (Llama 3's
    /// scaling)
    pub rope_freqs: bool,
}

/// Llama's block: SiLU gate, RoPE in adjacent pairs.
const LLAMA_GRAPH: StudentGraph = StudentGraph {
    neox_rope: false,
    qk_norm: false,
    post_attn_norm: false,
    gelu: false,
    rope_freqs: true,
};

/// One architecture family, as llama.cpp's graph for it computes a block.
#[derive(Debug)]
pub struct Family {
    /// the `general.architecture` values of the family
    pub names: &'static [&'static str],
    /// graph-node names that differ from the common ones (`cb(…, "NAME", il)`)
    nodes: &'static [(Kind, &'static str)],
    /// whether the graph adds `attn_output.bias` and `ffn_down.bias` when a file has them
    pub out_biases: bool,
    /// whether the MLP output passes through `post_ffw_norm` before the residual
    pub post_ffn_norm: bool,
    /// whether layers may attend through a sliding window (`{arch}.attention.sliding_window`)
    pub sliding_window: bool,
    /// whether the graph scales token embeddings by `√n_embd` before the first block (input
    /// embeddings given in their place are not scaled)
    pub scaled_embeddings: bool,
    /// the `bake` student's graph; `None`: bake refuses the family
    pub student: Option<StudentGraph>,
    /// why nothing supports the family yet, when nothing does
    pub refused: Option<&'static str>,
}

/// Node names shared by the families (llama.cpp's llm_build_* graphs).
const COMMON: [(Kind, &str); 9] = [
    (Kind::AttnNorm, "attn_norm"),
    (Kind::Value, "Vcur"),
    (Kind::AttnProbs, "kq_soft_max"),
    (Kind::AttnOutPre, "kqv_out"),
    (Kind::MlpIn, "ffn_norm"),
    (Kind::MlpHidden, "ffn_swiglu"),
    (Kind::MlpOut, "ffn_out"),
    (Kind::BlockOut, "l_out"),
    (Kind::Resid, "ffn_inp"),
];

/// Every family gguf-sleep knows.
pub const FAMILIES: [Family; 5] = [
    Family {
        names: &["llama", "mistral"],
        nodes: &[(Kind::AttnOut, "attn_out")],
        out_biases: true,
        post_ffn_norm: false,
        sliding_window: false,
        scaled_embeddings: false,
        student: Some(LLAMA_GRAPH),
        refused: None,
    },
    Family {
        names: &["qwen2"],
        nodes: &[],
        out_biases: false,
        post_ffn_norm: false,
        sliding_window: false,
        scaled_embeddings: false,
        student: Some(StudentGraph {
            neox_rope: true,
            rope_freqs: false,
            ..LLAMA_GRAPH
        }),
        refused: None,
    },
    Family {
        names: &["qwen3"],
        nodes: &[],
        out_biases: false,
        post_ffn_norm: false,
        sliding_window: false,
        scaled_embeddings: false,
        student: Some(StudentGraph {
            neox_rope: true,
            qk_norm: true,
            rope_freqs: false,
            ..LLAMA_GRAPH
        }),
        refused: None,
    },
    Family {
        names: &["gemma3"],
        nodes: &[
            (Kind::AttnOut, "attn_post_norm"),
            (Kind::MlpHidden, "ffn_geglu"),
            (Kind::Resid, "sa_out"),
        ],
        out_biases: false,
        post_ffn_norm: true,
        sliding_window: true,
        scaled_embeddings: true,
        student: Some(StudentGraph {
            neox_rope: true,
            qk_norm: true,
            post_attn_norm: true,
            gelu: true,
            rope_freqs: false,
        }),
        refused: None,
    },
    Family {
        names: &["granite"],
        nodes: &[(Kind::AttnOut, "attn_out")],
        out_biases: true,
        post_ffn_norm: false,
        sliding_window: false,
        scaled_embeddings: false,
        student: None,
        refused: Some(
            "llama.cpp scales each granite block's output by f_residual_scale, which gguf-sleep \
             does not model yet (a patch would come out several times too small)",
        ),
    },
];

/// What a refusal of a family suggests instead.
const INSTEAD: &str = "give this model the prompt as a system prompt at run time instead";

impl Family {
    /// The family of `general.architecture = name`; an unknown or refused one is an error that
    /// says which are known.
    pub fn of(name: &str) -> Result<&'static Family> {
        let Some(f) = FAMILIES.iter().find(|f| f.names.contains(&name)) else {
            bail!(
                "unsupported architecture '{name}': gguf-sleep knows llama, mistral, qwen2, qwen3 \
                 and gemma3; {INSTEAD}"
            );
        };
        if let Some(why) = f.refused {
            bail!("unsupported architecture '{name}': {why}; {INSTEAD}");
        }
        Ok(f)
    }

    /// The graph node holding `kind` (`None`: the graph names no such node).
    pub fn node(&self, kind: Kind) -> Option<&'static str> {
        self.nodes
            .iter()
            .chain(COMMON.iter())
            .find(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_names_the_block_output_and_unknown_ones_are_refused() {
        for f in &FAMILIES {
            assert_eq!(f.node(Kind::BlockOut), Some("l_out"), "{:?}", f.names);
        }
        assert_eq!(
            Family::of("gemma3").unwrap().node(Kind::MlpHidden),
            Some("ffn_geglu")
        );
        assert_eq!(Family::of("qwen3").unwrap().node(Kind::AttnOut), None);
        assert!(Family::of("mistral").unwrap().out_biases);
        let e = Family::of("alien").unwrap_err().to_string();
        assert!(e.contains("architecture"), "{e}");
        let e = Family::of("granite").unwrap_err().to_string();
        assert!(e.contains("f_residual_scale"), "{e}");
    }
}
