//! gguf-sleep: bake a system prompt into the weights of a llama.cpp GGUF model, without training.
//!
//! The pipeline, one module per stage (data flows one way):
//! container ([`gguf`]) → [`engine`] (llama.cpp) → capture → method → requantize → writer,
//! with eval beside them.

pub mod bake;
pub mod capture;
pub mod chat;
pub mod convo;
pub mod diff;
pub mod engine;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod material;
pub mod ollama;
pub mod patch;
