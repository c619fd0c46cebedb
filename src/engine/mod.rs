//! The llama.cpp engine: the only place in the project that calls llama.cpp / ggml or uses `unsafe`.
//!
//! It offers a small safe API: load a [`Model`], make a [`Context`] (optionally observing named
//! graph nodes through llama.cpp's graph-evaluation callback), tokenize, decode a [`Batch`] and
//! read logits, plus ggml's own tensor codecs ([`dequantize`], [`quantize`]).
//!
//! Everything else in the project (capture, methods, eval) is written in safe Rust on top of it.

mod adapter;
mod backend;
mod batch;
pub mod blas;
mod codec;
mod context;
mod model;
mod quantize;

pub use adapter::LoraAdapter;
pub use backend::{
    default_threads, retain_freed_memory, return_freed_memory, set_ctx_size, set_gpu_layers,
    set_threads, with_single_threaded_lapack,
};
pub use batch::Batch;
pub use codec::{dequantize, quantize, quantize_requires_imatrix, CodecError};
pub use context::{Captured, Context, ContextOptions};
pub use model::{Model, ModelInfo};
pub use quantize::{quantize_model, FileType};
