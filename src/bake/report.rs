//! What a `bake` run reports: progress as it goes, and what it did.

use std::path::PathBuf;

use super::train::CurvePoint;
use crate::store::TensorReport;

/// What a `bake` run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BakeReport {
    /// calibration questions
    pub questions: usize,
    /// trajectories trained on
    pub train_trajectories: usize,
    /// reply tokens trained on
    pub train_tokens: usize,
    /// trajectories the curve is measured on (questions never trained on)
    pub val_trajectories: usize,
    /// mean teacher mass outside the kept top-k (what the KL lumps together)
    pub mean_tail_mass: f64,
    /// trainable parameters
    pub params: usize,
    /// trajectories per forward and backward pass (the step's gradients summed over them)
    pub micro_batch: usize,
    /// whether each layer's activations were recomputed in the backward pass
    pub recompute: bool,
    /// validation KL of the unmodified model (the prompt's effect)
    pub val_kl_base: f64,
    /// the training curve
    pub curve: Vec<CurvePoint>,
    /// first step whose validation recovery reached 0.9
    pub steps_to_0_9: Option<usize>,
    /// warm start: validation recovery of the patched model before training
    pub init_recovery: Option<f64>,
    /// per stored tensor (merged output)
    pub tensors: Vec<TensorReport>,
    /// (phase, seconds)
    pub phases: Vec<(String, f64)>,
    /// output path
    pub output: PathBuf,
    /// output size in bytes
    pub bytes: u64,
}

/// Progress callback: (phase, done, total, loss of the last step).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize, Option<f64>);
