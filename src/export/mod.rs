//! Exports of a patch in the forms llama.cpp applies at run time instead of merged weights:
//! a LoRA adapter ([`lora`]) and a control vector ([`cvec`]). Both are computed from the
//! original model and the merged, unquantized patch, so each reproduces exactly that patch
//! (up to the LoRA rank). [`ollama`] writes the Modelfile that imports a patched model.

pub mod changes;
pub mod cvec;
pub mod lora;
pub mod ollama;

pub use changes::ExportReport;
