//! What a `patch` run reports: per layer, per tensor, per phase.

use std::path::PathBuf;

use crate::store::TensorReport;

/// Per-layer outcome of a fit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// layer index
    pub layer: usize,
    /// chosen ridge λ (relative to tr(G)/d); sleep: none
    pub lambda: Option<f64>,
    /// validation error relative to leaving the difference uncorrected
    pub val_rel_error: Option<f64>,
    /// sleep: measured α per KV head
    pub alpha: Option<Vec<f64>>,
}

/// What a `patch` run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchReport {
    /// method name
    pub method: String,
    /// "parallel" or "sequential"
    pub mode: String,
    /// edit scale
    pub strength: f32,
    /// calibration questions
    pub questions: usize,
    /// aligned calibration tokens fitted (per layer)
    pub tokens: usize,
    /// of them, rows that predict a content token of a reply (a word of the prompt the
    /// question does not contain)
    pub content_rows: usize,
    /// how many times each content row counted in the fit
    pub content_weight: f32,
    /// of them, plain-text rows fitted to leave the model unchanged (`anchors`)
    pub anchor_tokens: usize,
    /// per-layer fits
    pub layers: Vec<LayerReport>,
    /// per edited tensor
    pub tensors: Vec<TensorReport>,
    /// (phase, seconds)
    pub phases: Vec<(String, f64)>,
    /// output path
    pub output: PathBuf,
    /// output size in bytes
    pub bytes: u64,
    /// seconds of a plain prefill (no capture) of every prompted and unprompted calibration
    /// sequence, when measured
    pub prefill_s: Option<f64>,
    /// the adapter written instead of the merged model (`--emit lora|cvec`)
    pub export: Option<crate::export::ExportReport>,
}
