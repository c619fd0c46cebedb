//! Dequantized weights read from the input file, for edits computed from the original weights.

use anyhow::{bail, Context as _, Result};
use ndarray::Array2;

use super::method::Weights;
use crate::engine::dequantize;

/// Weights of an open GGUF file.
pub struct FileWeights<'a>(pub &'a gguf::GgufFile);

impl Weights for FileWeights<'_> {
    fn matrix(&self, name: &str) -> Result<Array2<f32>> {
        let info = self
            .0
            .header()
            .tensor(name)
            .with_context(|| format!("the model has no tensor {name}"))?;
        if info.dims.len() != 2 {
            bail!("{name} is not a matrix");
        }
        let v = dequantize(info.ggml_type, self.0.tensor_data(info), info.n_elements())?;
        Ok(Array2::from_shape_vec(
            (info.dims[1] as usize, info.dims[0] as usize),
            v,
        )?)
    }
}
