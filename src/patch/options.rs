//! What a `patch` run is asked to do, with the defaults and the checks that need no model.

use std::path::PathBuf;

use super::method::Method;
use super::ridge::Lambda;
use crate::options::{ensure, InvalidOptions};
use crate::store::{EditType, Provenance};
use crate::text::Rendering;

/// Settings of one `patch` run. [`Default`] is the default patch: `down`, sequential, every
/// layer, the built-in questions and up to 48 built from the prompt, every plain-text anchor,
/// λ 0.1 of the mean feature power, edits in the file's own types with output-aware rounding,
/// `ffn_down.bias` where the architecture applies one.
#[derive(Debug, Clone)]
pub struct PatchOptions {
    /// the method
    pub method: Method,
    /// fit layer by layer on activations recomputed with the earlier layers patched
    pub sequential: bool,
    /// scale of every edit (0 = identity)
    pub strength: f32,
    /// layers to edit, `[start, end)`; all when `None`
    pub layers: Option<(usize, usize)>,
    /// calibration questions
    pub questions: Vec<String>,
    /// most questions built from the system prompt's own words
    /// ([`crate::text::questions::about_prompt`]) asked after `questions`; 0 = none
    pub prompt_questions: usize,
    /// ridge λ
    pub lambda: Lambda,
    /// storage type of edited weight matrices
    pub edit_type: EditType,
    /// round edited matrices to keep each layer's output on the calibration inputs
    /// ([`crate::store::rounding`]) instead of each weight to its nearest grid value
    pub output_rounding: bool,
    /// sleep: α override (measured per layer and head otherwise)
    pub alpha: Option<f64>,
    /// sleep: β
    pub beta: f64,
    /// reply tokens generated per calibration question
    pub max_tokens: usize,
    /// write over the input model
    pub in_place: bool,
    /// also time a plain prefill of the calibration tokens (the lower bound of capture)
    pub measure_prefill: bool,
    /// what to write: the merged model, or an adapter llama.cpp applies at run time
    pub emit: Emit,
    /// `down`: also fit `ffn_down.bias` where the architecture applies one (off for LoRA)
    pub bias: bool,
    /// the renderings of the unprompted side the calibration conversations cycle through
    pub renderings: Vec<Rendering>,
    /// how many times a row that predicts a content token of a reply (a word of the system
    /// prompt the question does not contain, [`crate::text::content`]) counts in the fit;
    /// 1 = as any other row
    pub content_weight: f32,
    /// plain-text paragraphs ([`crate::text::anchors`]) fitted beside the conversations with
    /// the base model's own activations as the target (least-squares methods); 0 = none
    pub anchors: usize,
}

impl Default for PatchOptions {
    fn default() -> PatchOptions {
        PatchOptions {
            method: Method::Down,
            sequential: true,
            strength: 1.0,
            layers: None,
            questions: crate::text::default_questions(),
            prompt_questions: 48,
            // Below what the validation split picks (1.0 on most of SmolLM2's layers): the
            // rare directions a prompt's names and facts live in keep more of their fit
            // (docs/RESULTS.md, the content suite's choosing half).
            lambda: Lambda::Fixed(0.1),
            edit_type: EditType::Same,
            output_rounding: true,
            alpha: None,
            beta: 1.0,
            max_tokens: 64,
            in_place: false,
            measure_prefill: false,
            emit: Emit::Merged,
            bias: true,
            renderings: vec![Rendering::Template],
            content_weight: 1.0,
            anchors: crate::text::anchors::COUNT,
        }
    }
}

impl PatchOptions {
    /// Every calibration question of a run with `system`: `questions`, then those built from
    /// the prompt.
    pub fn all_questions(&self, system: &str) -> Vec<String> {
        let mut q = self.questions.clone();
        q.extend(crate::text::questions::about_prompt(
            system,
            self.prompt_questions,
        ));
        q
    }

    /// The checks that need no model: fields that cannot work, alone or together.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        ensure(!self.questions.is_empty(), || {
            "no calibration `questions`".into()
        })?;
        ensure(!self.renderings.is_empty(), || "no `renderings`".into())?;
        ensure(
            self.content_weight.is_finite() && self.content_weight > 0.0,
            || "`content_weight` must be a positive number".into(),
        )?;
        ensure(self.strength.is_finite(), || {
            "`strength` must be a finite number".into()
        })?;
        ensure(!(self.method == Method::Sleep && self.sequential), || {
            "`method` sleep is a closed-form correction; `sequential` applies to vector, matrix \
             and down"
                .into()
        })?;
        if let Lambda::Fixed(l) = self.lambda {
            ensure(l.is_finite() && l > 0.0, || {
                format!("`lambda` must be auto or a positive number, not {l}")
            })?;
        }
        match self.emit {
            Emit::Merged => {}
            Emit::Lora(rank) => {
                ensure(matches!(self.method, Method::Down | Method::Matrix), || {
                    "`emit` lora carries weight matrices: use `method` down or matrix".into()
                })?;
                ensure(rank > 0, || "`lora_rank` must be at least 1".into())?;
            }
            Emit::Cvec => ensure(self.method == Method::Cvec, || {
                "`emit` cvec needs `method` cvec (a vector at each block's output)".into()
            })?,
        }
        ensure(self.emit == Emit::Merged || !self.in_place, || {
            "`in_place` writes a model: it does not go with `emit` lora or cvec".into()
        })?;
        let bias_only = matches!(self.method, Method::Vector | Method::Cvec);
        ensure(!bias_only || self.bias, || {
            format!(
                "`method` {} fits only a bias: it cannot go without `bias`",
                self.method.name()
            )
        })
    }

    /// Anchor paragraphs the fit uses: the first `anchors` (at most as many as are built in)
    /// for the least-squares methods, none for `sleep` (a correction measured on the prompt
    /// alone, not fitted on rows).
    pub fn anchor_paragraphs(&self) -> Vec<&'static str> {
        if self.method == Method::Sleep {
            Vec::new()
        } else {
            crate::text::anchors::paragraphs(self.anchors)
        }
    }

    /// "sequential" or "parallel".
    pub fn mode(&self) -> &'static str {
        if self.sequential {
            "sequential"
        } else {
            "parallel"
        }
    }
}

/// What `patch` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// the patched model, edits merged into its weights
    Merged,
    /// a LoRA adapter of the weight changes (`down`, `matrix`), at most this rank
    Lora(usize),
    /// a control vector (`cvec`)
    Cvec,
}

/// What a caller of the patch may already have (`bake` does): the prompted model's replies, a
/// teacher adapter, and provenance of its own to record over the patch's.
#[derive(Debug, Clone, Default)]
pub struct Supplied {
    /// the prompted model's replies to the questions, one each, already sampled from it: no
    /// replies are generated
    pub replies: Option<Vec<Vec<i32>>>,
    /// fit to this LoRA adapter instead of to the prompt (sequential only): the targets are the
    /// activations of the model with the adapter applied and no system prompt, on the same
    /// tokens as the unprompted run
    pub teacher_lora: Option<PathBuf>,
    /// provenance recorded over the patch's own, in the same write
    pub then: Option<Provenance>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_fitted_by_the_least_squares_methods_only() {
        let d = PatchOptions {
            anchors: 20,
            ..PatchOptions::default()
        };
        assert_eq!(d.anchor_paragraphs().len(), 20);
        let many = PatchOptions {
            anchors: 1000,
            ..d.clone()
        };
        assert_eq!(
            many.anchor_paragraphs().len(),
            20,
            "as many as are built in"
        );
        let sleep = PatchOptions {
            method: Method::Sleep,
            sequential: false,
            ..d
        };
        assert!(sleep.validate().is_ok());
        assert_eq!(sleep.anchor_paragraphs().len(), 0);
    }
}
