//! A faithful reader and writer for GGUF, the model file format of llama.cpp.
//!
//! A GGUF file is a header (magic `GGUF`, version, counts), typed key/value metadata, a tensor
//! directory (name, dims, ggml type, offset) and an aligned data section where every tensor
//! starts at the running sum of the previous tensors' sizes padded to `general.alignment`.
//!
//! - [`GgufFile::open`] memory-maps a file and validates it as strictly as llama.cpp's loader
//!   ([`Header::parse`]): every malformed input is a typed [`Error`] with a one-line message,
//!   never a panic or an allocation sized by an untrusted count.
//! - [`write()`] streams an edited copy ([`Edits`]: replace or add tensors, set or remove
//!   metadata) to a temporary file, checks it with the reader and renames it into place.
//!   Untouched tensors are copied byte for byte; with no edits the output equals the input.
//! - [`patch_in_place`] overwrites same-size tensor data inside an existing file.
//!
//! ```no_run
//! use gguf::{Edits, GgmlType, GgufFile, NewTensor, WriteOptions};
//! # fn main() -> gguf::Result<()> {
//! let src = GgufFile::open("model.gguf")?;
//! println!("{:?} with {} tensors", src.header().architecture(), src.header().tensors.len());
//! let mut edits = Edits::new();
//! edits.add_tensor(NewTensor {
//!     name: "blk.0.attn_v.bias".into(),
//!     dims: vec![64],
//!     ggml_type: GgmlType::F32,
//!     data: vec![0; 64 * 4],
//!     after: Some("blk.0.attn_v.weight".into()),
//! });
//! edits.set_metadata("sleep.method", "value-bias");
//! gguf::write(&src, &edits, "out.gguf".as_ref(), &WriteOptions::default())?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cursor;
mod edits;
mod encode;
mod error;
mod file;
mod header;
mod inplace;
mod metadata;
mod reader;
mod stale;
mod tensor;
mod types;
mod value;
mod writer;

#[doc(hidden)]
pub mod testkit;

pub use edits::{Edits, MetadataEdit, NewTensor, Replacement};
pub use error::{Error, Result};
pub use file::GgufFile;
pub use header::Header;
pub use inplace::patch_in_place;
pub use metadata::Metadata;
pub use stale::remove_stale;
pub use tensor::{block_of, TensorInfo};
pub use types::GgmlType;
pub use value::{Array, GgufString, Value, ValueType};
pub use writer::{write, write_new, WriteOptions, WriteReport};

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Metadata key holding the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name in bytes (ggml's `GGML_MAX_NAME` is 64, NUL included).
pub const MAX_TENSOR_NAME: usize = 63;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Longest string accepted (gguf.cpp's `GGUF_MAX_STRING_LENGTH`, 1 GiB).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Most items in one array (gguf.cpp's `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
