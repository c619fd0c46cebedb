//! What a `bake` run is asked to do: the options, every default (including those that depend
//! on where training starts), and the checks that need no model.

use std::path::PathBuf;

use super::lora::Targets;
use super::teacher::TeacherOptions;
use super::train::TrainOptions;
use crate::options::{ensure, InvalidOptions};
use crate::store::EditType;

/// Where training starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// the unmodified model (`B = 0`)
    None,
    /// the model as the training-free `patch` (its default method, sequential, requantized to
    /// the stored types) writes it: the student trains adapters on top of the patched weights
    Patch,
}

/// How a trained adapter becomes a model's own weights (merged output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// `W + B·A` of every adapted matrix requantized to its stored type (with
    /// quantization-aware training from `TrainOptions::qat_from`)
    Requantize,
    /// the adapter, trained in full precision, is the teacher of the training-free `patch`
    /// (`down`, sequential, output-aware rounding): each layer's `ffn_down` and its bias are
    /// fitted, in the file's own types, to reproduce the adapted model's activations
    Refit,
}

/// What `bake` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BakeEmit {
    /// the adapter merged into the weights, requantized
    Merged,
    /// a LoRA adapter GGUF
    Lora,
}

/// Settings of one `bake` run. [`Default`] is the default bake: a merged output warm-started
/// from the patch, with [`Init::train_defaults`] for it.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// calibration questions (every fifth is held out for the validation curve)
    pub questions: Vec<String>,
    /// teacher settings
    pub teacher: TeacherOptions,
    /// training settings
    pub train: TrainOptions,
    /// adapter rank
    pub rank: usize,
    /// projections adapted
    pub targets: Targets,
    /// warm start
    pub init: Init,
    /// most calibration questions the warm start's or the refit's patch fits on (drawn evenly
    /// from the training questions, with the teacher's first sampled reply to each)
    pub init_questions: usize,
    /// scale of the trained adapter (0 = identity)
    pub strength: f32,
    /// merged model or adapter
    pub emit: BakeEmit,
    /// how a merged output takes in the adapter
    pub merge: Merge,
    /// also train a change to the biases of `attn_output` and `ffn_down` (merged output only:
    /// stored exactly in F32, where a 4-bit grid rounds most of a low-rank change away)
    pub bias: bool,
    /// storage of merged matrices
    pub edit_type: EditType,
    /// round merged adapters to keep each layer's output (see [`crate::store::rounding`]); the
    /// warm start's patch always is (its default)
    pub output_rounding: bool,
    /// most validation trajectories
    pub max_val: usize,
    /// also write the adapter here (with a merged output): as trained in full precision, just
    /// before quantization-aware training starts, or at the end without it
    pub save_adapter: Option<PathBuf>,
}

/// The training defaults that depend on where training starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainDefaults {
    /// optimizer steps
    pub steps: usize,
    /// trajectories per step
    pub batch: usize,
    /// validate every this many steps
    pub eval_every: usize,
}

impl Init {
    /// The default start: the warm start for a merged, requantized output at full strength
    /// that saves no adapter; the unmodified model otherwise (an adapter cannot carry the
    /// patch's changes, and a refit needs an adapter trained from the unmodified model).
    pub fn default_for(emit: BakeEmit, merge: Merge, strength: f32, save_adapter: bool) -> Init {
        if emit == BakeEmit::Merged
            && merge == Merge::Requantize
            && strength == 1.0
            && !save_adapter
        {
            Init::Patch
        } else {
            Init::None
        }
    }

    /// Training on top of the patch gains little after 16 steps; from the unmodified model,
    /// twice the steps of half the trajectories train further in the same time
    /// (docs/RESULTS.md).
    pub fn train_defaults(self) -> TrainDefaults {
        match self {
            Init::Patch => TrainDefaults {
                steps: 32,
                batch: 8,
                eval_every: 8,
            },
            Init::None => TrainDefaults {
                steps: 96,
                batch: 4,
                eval_every: 16,
            },
        }
    }
}

/// The forward activations a training pass may hold when the micro-batch is not given, as
/// estimated by [`activation_bytes`] (autograd's peak is several times more).
pub const ACTIVATION_BUDGET: f64 = 512.0 * 1024.0 * 1024.0;

/// Estimated forward activations of one token: per layer ten residual-width vectors (norms,
/// projections, attention, residuals) and four of the feed-forward width, in f32.
pub fn activation_bytes(n_layer: usize, n_embd: usize, n_ff: usize) -> f64 {
    4.0 * n_layer as f64 * (10 * n_embd + 4 * n_ff) as f64
}

/// Trajectories per forward and backward pass when not given: as many as
/// [`ACTIVATION_BUDGET`] holds (of one layer's activations when they are recomputed, see
/// [`default_recompute`]), at least one, at most the batch. Measured (docs/RESULTS.md):
/// on SmolLM2 two or four a pass train faster than eight and hold a third to a half of their
/// memory (one is 30% slower); on a 1B-sized llama one a pass keeps a short bake within 6 GiB
/// (4.4 GiB, 10% slower than two, which need 6.5).
pub fn default_micro_batch(per_token_bytes: f64, mean_tokens: f64, batch: usize) -> usize {
    let per_trajectory = (per_token_bytes * mean_tokens).max(1.0);
    ((ACTIVATION_BUDGET / per_trajectory) as usize).clamp(1, batch.max(1))
}

/// Whether training recomputes each layer's activations when not told: when
/// [`ACTIVATION_BUDGET`] holds fewer than two trajectories' activations through every layer
/// ([`activation_bytes`] × their tokens), where the whole graph would go one trajectory a pass.
/// Measured (docs/RESULTS.md): there, recomputation with the budget's micro-batch (one layer's
/// activations of up to the whole batch) trains 10–13% faster than one whole graph a pass and
/// holds 0.21 GiB a layer instead of 0.58 at 8B width; on SmolLM2 (three a pass) it is not used.
pub fn default_recompute(per_token_bytes: f64, mean_tokens: f64) -> bool {
    2.0 * per_token_bytes * mean_tokens > ACTIVATION_BUDGET
}

/// The default start of quantization-aware training: the last third of the steps.
pub fn default_qat_from(steps: usize) -> usize {
    steps * 2 / 3
}

impl Default for TeacherOptions {
    fn default() -> TeacherOptions {
        TeacherOptions {
            per_question: 1,
            temperature: 0.8,
            max_tokens: 64,
            seed: 42,
            top_k: 256,
        }
    }
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        let d = Init::Patch.train_defaults();
        TrainOptions {
            steps: d.steps,
            batch: d.batch,
            micro_batch: None,
            recompute: None,
            lr: 2e-3,
            eval_every: d.eval_every,
            seed: 42,
            qat_from: Some(default_qat_from(d.steps)),
            qat_every: 4,
        }
    }
}

impl Default for BakeOptions {
    fn default() -> BakeOptions {
        BakeOptions {
            questions: crate::text::default_questions(),
            teacher: TeacherOptions::default(),
            train: TrainOptions::default(),
            rank: 8,
            targets: Targets::All,
            init: Init::Patch,
            init_questions: 128,
            strength: 1.0,
            emit: BakeEmit::Merged,
            merge: Merge::Requantize,
            bias: false,
            edit_type: EditType::Same,
            output_rounding: false,
            max_val: 16,
            save_adapter: None,
        }
    }
}

impl BakeOptions {
    /// Whether the merged output is the patch fitted to the adapter ([`Merge::Refit`]).
    pub fn refit(&self) -> bool {
        self.emit == BakeEmit::Merged && self.merge == Merge::Refit
    }

    /// The checks that need no model: fields that cannot work, alone or together.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        let at_least_one =
            |v: usize, field: &str| ensure(v > 0, || format!("`{field}` must be at least 1"));
        ensure(!self.questions.is_empty(), || {
            "no calibration `questions`".into()
        })?;
        at_least_one(self.rank, "rank")?;
        at_least_one(self.train.batch, "batch")?;
        if let Some(m) = self.train.micro_batch {
            at_least_one(m, "micro_batch")?;
        }
        at_least_one(self.teacher.top_k, "top_k")?;
        at_least_one(self.teacher.per_question, "per_question")?;
        at_least_one(self.init_questions, "init_questions")?;
        ensure(self.strength.is_finite(), || {
            "`strength` must be a finite number".into()
        })?;
        ensure(self.train.lr.is_finite() && self.train.lr > 0.0, || {
            "`lr` must be a positive number".into()
        })?;
        let adapter_out = self.emit == BakeEmit::Lora || self.save_adapter.is_some();
        ensure(!(self.init == Init::Patch && adapter_out), || {
            "`init` patch changes the weights themselves, which an adapter cannot carry: use \
             `emit` merged"
                .into()
        })?;
        ensure(!(self.bias && adapter_out), || {
            "an adapter file cannot carry bias changes: bake without `bias` for `emit` lora or \
             `save_adapter`"
                .into()
        })?;
        ensure(
            !(self.refit() && (self.init == Init::Patch || self.bias)),
            || {
                "`merge` refit fits the patch to an adapter trained from the unmodified model: use \
             it with `init` none and without `bias`"
                    .into()
            },
        )?;
        ensure(!(self.init == Init::Patch && self.strength != 1.0), || {
            "`strength` scales an adapter trained from the unmodified model: use `init` none \
             with it (or patch's own strength)"
                .into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_bake_is_valid_and_warm_started() {
        let o = BakeOptions::default();
        o.validate().unwrap();
        assert_eq!(
            Init::default_for(o.emit, o.merge, o.strength, false),
            o.init
        );
        assert_eq!(o.train.steps, Init::Patch.train_defaults().steps);
    }

    #[test]
    fn the_default_micro_batch_shrinks_with_the_model_and_stays_within_the_batch() {
        let tokens = 110.0;
        let smollm2 = activation_bytes(30, 576, 1536);
        let llama_1b = activation_bytes(16, 2048, 8192);
        let llama_8b = activation_bytes(32, 4096, 14336);
        let m = default_micro_batch(smollm2, tokens, 8);
        assert!((2..=4).contains(&m), "SmolLM2: {m}");
        assert_eq!(default_micro_batch(llama_1b, tokens, 8), 1);
        assert_eq!(default_micro_batch(llama_8b, tokens, 8), 1);
        assert_eq!(default_micro_batch(1.0, 1.0, 8), 8, "never above the batch");
        assert!(bad_micro_batch_is_refused());
        assert!(
            !default_recompute(smollm2, tokens),
            "three a pass fit on SmolLM2"
        );
        assert!(default_recompute(llama_1b, tokens) && default_recompute(llama_8b, tokens));
        // recomputed, a pass holds one layer's activations: the whole batch at 8B
        assert_eq!(default_micro_batch(llama_8b / 32.0, tokens, 8), 8);
    }

    fn bad_micro_batch_is_refused() -> bool {
        let mut o = BakeOptions::default();
        o.train.micro_batch = Some(0);
        o.validate().unwrap_err().0.contains("`micro_batch`")
    }

    #[test]
    fn invalid_options_name_their_fields() {
        let bad = |f: &dyn Fn(&mut BakeOptions)| {
            let mut o = BakeOptions::default();
            f(&mut o);
            o.validate().unwrap_err().0
        };
        assert!(bad(&|o| o.rank = 0).contains("`rank`"));
        assert!(bad(&|o| o.emit = BakeEmit::Lora).contains("`init` patch"));
        assert!(bad(&|o| {
            o.init = Init::None;
            o.merge = Merge::Refit;
            o.bias = true;
        })
        .contains("`merge` refit"));
        assert_eq!(
            Init::default_for(BakeEmit::Lora, Merge::Requantize, 1.0, false),
            Init::None
        );
    }
}
