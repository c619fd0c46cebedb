//! Adapters llama.cpp applies on top of a model at run time: LoRA adapters (GGUF files with
//! `general.type = adapter`) and control vectors (one residual vector per layer).

use anyhow::{bail, Result};
use std::ffi::CString;
use std::path::Path;

use super::context::Context;
use super::model::Model;
use llama_cpp_sys_2 as sys;

/// A LoRA adapter loaded for one model; llama.cpp frees it with the model.
pub struct LoraAdapter<'m> {
    ptr: *mut sys::llama_adapter_lora,
    _model: std::marker::PhantomData<&'m Model>,
}

impl Model {
    /// Load the LoRA adapter GGUF at `path` for this model.
    pub fn load_lora(&self, path: &Path) -> Result<LoraAdapter<'_>> {
        let Some(c) = path.to_str().and_then(|s| CString::new(s).ok()) else {
            bail!("the adapter path {} is not valid UTF-8", path.display());
        };
        // SAFETY: the model pointer is live for 'self; the path is a NUL-terminated string.
        let ptr = unsafe { sys::llama_adapter_lora_init(self.raw(), c.as_ptr()) };
        if ptr.is_null() {
            bail!(
                "llama.cpp could not load {} as a LoRA adapter for this model",
                path.display()
            );
        }
        Ok(LoraAdapter {
            ptr,
            _model: std::marker::PhantomData,
        })
    }
}

impl<'m> Context<'m> {
    /// Apply `adapter` scaled by `scale` to the following decodes (replacing any other).
    pub fn set_lora(&mut self, adapter: &LoraAdapter<'m>, scale: f32) -> Result<()> {
        let mut adapters = [adapter.ptr];
        let mut scales = [scale];
        // SAFETY: one live adapter of this context's model and one scale.
        let rc = unsafe {
            sys::llama_set_adapters_lora(self.raw(), adapters.as_mut_ptr(), 1, scales.as_mut_ptr())
        };
        if rc != 0 {
            bail!("llama.cpp refused the LoRA adapter (code {rc})");
        }
        Ok(())
    }

    /// Add `directions[l]` to the output of every layer `l ≥ 1` (llama.cpp never applies a
    /// control vector to layer 0); `directions` holds `n_embd` values per layer from layer 1.
    pub fn set_control_vector(&mut self, directions: &[f32]) -> Result<()> {
        let info = self.model().info();
        let (n_embd, n_layer) = (info.n_embd, info.n_layer);
        if directions.len() != n_embd * (n_layer - 1) {
            bail!(
                "a control vector for this model holds {} values (layers 1..{n_layer} × {n_embd}), not {}",
                n_embd * (n_layer - 1),
                directions.len()
            );
        }
        // SAFETY: `directions` is live for the call and its length is passed.
        let rc = unsafe {
            sys::llama_set_adapter_cvec(
                self.raw(),
                directions.as_ptr(),
                directions.len(),
                n_embd as i32,
                1,
                n_layer as i32 - 1,
            )
        };
        if rc != 0 {
            bail!("llama.cpp refused the control vector (code {rc})");
        }
        Ok(())
    }
}
