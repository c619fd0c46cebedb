//! gguf-sleep: bake a system prompt into the weights of a llama.cpp GGUF model.
//!
//! The pipeline, data flowing one way, each stage using only the ones before it:
//!
//! - container: the [`gguf`] crate (reading, validation, the atomic writer);
//! - [`engine`]: llama.cpp and ggml behind a safe API (the only `unsafe` code: the crate denies
//!   it everywhere else); [`arch`]: what each architecture family needs, in one table;
//! - [`text`]: chat templates, conversations, built-in questions; [`generate`] (and
//!   [`converse`], a chat over several turns) and
//!   [`material`]: the prompted model's replies, aligned with and without the prompt;
//! - [`capture`]: per-layer activations through llama.cpp's graph callback;
//! - methods: [`patch`] (closed-form fits, training-free) and [`bake`] (Prompt Baking: LoRA
//!   trained on a KL objective, in candle);
//! - [`store`]: edits requantized to stored types (output-aware rounding), provenance, output
//!   paths and scratch files; [`export`]: adapters, control vectors, Ollama Modelfiles;
//!
//! with [`eval`], [`inspect`] and [`diff`] beside them, and [`synth`]: random-weight models of
//! real architectures, for measuring cost at sizes no test model has. [`options`] is the error every stage's
//! option checks return.

#![deny(unsafe_code)]

pub mod arch;
pub mod bake;
pub mod capture;
pub mod converse;
pub mod diff;
#[allow(unsafe_code)]
pub mod engine;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod material;
pub mod options;
pub mod patch;
pub mod store;
pub mod synth;
#[cfg(test)]
mod testing;
pub mod text;
