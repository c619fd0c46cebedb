//! What every stage that writes a model shares, below `patch` and `bake` alike: changes to
//! tensors and how they are stored ([`edit`], with output-aware rounding in [`rounding`]), what
//! the file records of how it was made ([`provenance`]), and where outputs and scratch files go
//! ([`output`]).

pub mod edit;
pub mod output;
pub mod provenance;
pub mod rounding;

pub use edit::{to_gguf_edits, Change, Delta, EditType, TensorReport};
pub use provenance::Provenance;
