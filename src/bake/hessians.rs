//! Output-aware rounding's Hessians for the merged write, one layer at a time.
//!
//! Rounding a merged matrix weighs its error by the Gram of the inputs it reads. Held for every
//! layer at once those Grams outgrow the model (a 1B model's `ffn_down` inputs alone are
//! 8192² floats a layer, twice: all trajectories and the validation part); here the
//! trajectories' residual streams are kept instead and advanced one layer at a time through
//! the student, each layer's Grams summed as it passes and dropped once its matrices are
//! written.

use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::lora::LoraSet;
use super::student::Student;
use super::teacher::Example;
use crate::store::rounding::Hessian;

/// The residual streams of two sets of trajectories (the Gram's and the validation part's),
/// at the entry of layer [`LayerHessians::layer`]. It owns the student and releases each layer
/// once the streams have passed it, so the merged write's copy of the model grows as the
/// student's shrinks.
pub struct LayerHessians<'a> {
    student: Student,
    /// fresh adapters (`B = 0`): they change nothing, and mark which inputs to record
    lora: &'a LoraSet,
    fit: Vec<Tensor>,
    val: Vec<Tensor>,
    layer: usize,
}

impl<'a> LayerHessians<'a> {
    /// Embed `fit` and `val` (one trajectory at a time: no padding rows in the Grams) for a
    /// pass through `student` with the zero adapters `lora`; the student's quantization-aware
    /// matrices are dropped first, so the Grams are the model's before training.
    pub fn new(
        student: Student,
        lora: &'a LoraSet,
        fit: &[Example],
        val: &[Example],
    ) -> Result<LayerHessians<'a>> {
        student.clear_quantized();
        let embed = |set: &[Example]| -> Result<Vec<Tensor>> {
            set.iter()
                .map(|e| {
                    let ids: Vec<u32> = e.tokens.iter().map(|&t| t as u32).collect();
                    let n = ids.len();
                    student.embed(&Tensor::from_vec(ids, (1, n), &Device::Cpu)?)
                })
                .collect()
        };
        let (fit, val) = (embed(fit)?, embed(val)?);
        Ok(LayerHessians {
            student,
            lora,
            fit,
            val,
            layer: 0,
        })
    }

    /// The layer whose Hessians [`LayerHessians::next_layer`] returns next.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Per input of the current layer ([`super::student::input_of`]): the Gram over both sets,
    /// with the validation part apart for choosing the damping; then on to the next layer.
    pub fn next_layer(&mut self) -> Result<BTreeMap<String, Arc<Hessian>>> {
        let l = self.layer;
        let pass = |set: &mut Vec<Tensor>| -> Result<BTreeMap<String, ndarray::Array2<f32>>> {
            self.student.record_inputs(true);
            for x in set.iter_mut() {
                *x = self.student.advance(l, x, self.lora)?;
            }
            Ok(self.student.take_inputs().1)
        };
        let fit = pass(&mut self.fit)?;
        let mut val = pass(&mut self.val)?;
        self.student.release_layer(l);
        self.layer += 1;
        Ok(fit
            .into_iter()
            .map(|(k, g)| {
                let v = val.remove(&k);
                let gram = match &v {
                    Some(v) => g + v,
                    None => g,
                };
                let h = Hessian {
                    gram,
                    val: v,
                    bias: None,
                    search: true,
                };
                (k, Arc::new(h))
            })
            .collect())
    }
}
