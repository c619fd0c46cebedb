//! The error type: every failure is one variant whose message is a single line saying what is
//! wrong and, where it helps, what to do about it.
//!
//! Names read from a file are printed with `{:?}` so that control characters in a corrupt name
//! can never break the message over several lines.

use std::io;
use std::path::PathBuf;

use crate::types::GgmlType;
use crate::value::ValueType;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, validating, writing or patching a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed (open, read, write, fsync, rename...).
    #[error("cannot {action} {}: {cause}{}", path.display(), io_hint(cause))]
    Io {
        /// What was being done, e.g. "open" or "write".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        cause: io::Error,
    },

    /// The file does not start with `GGUF`.
    #[error(
        "not a GGUF file (bad magic 0x{}): expected a llama.cpp .gguf model",
        hex(found)
    )]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },

    /// The version field is not 2 or 3.
    #[error("{}", version_message(*version))]
    UnsupportedVersion {
        /// The version read from the file.
        version: u32,
    },

    /// A field runs past the end of the file.
    #[error("truncated GGUF: {what} at byte {offset} needs {needed} bytes but only {available} remain; the file is incomplete (download or convert it again)")]
    Truncated {
        /// The field being read.
        what: String,
        /// Absolute position of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },

    /// A count (tensors, keys, array items) cannot possibly fit in the rest of the file.
    #[error("corrupt GGUF: {what} {count} cannot fit in the {remaining} bytes left in the file")]
    CountTooLarge {
        /// What is counted.
        what: String,
        /// The count read from the file.
        count: u64,
        /// Bytes left in the file after the count.
        remaining: u64,
    },

    /// A string length points past the end of the file or over the 1 GiB limit of llama.cpp.
    #[error("corrupt GGUF: {what} has length {len} but at most {max} bytes are available")]
    StringTooLong {
        /// Which string.
        what: String,
        /// The declared length.
        len: u64,
        /// The largest length that could be valid here.
        max: u64,
    },

    /// A key or tensor name is not UTF-8.
    #[error("corrupt GGUF: {what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
    },

    /// A metadata key is the empty string.
    #[error("corrupt GGUF: metadata key {index} is empty")]
    EmptyKey {
        /// Position of the key.
        index: u64,
    },

    /// The same metadata key appears twice.
    #[error("corrupt GGUF: duplicate metadata key {key:?}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },

    /// A metadata value type id outside 0..=12.
    #[error("corrupt GGUF: metadata key {key:?} has unknown value type id {id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The id read from the file.
        id: u32,
    },

    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("corrupt GGUF: metadata key {key:?} nests arrays deeper than {max} levels")]
    ArrayTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },

    /// An array whose items do not all have its element type.
    #[error("metadata key {key:?}: array of {elem_type} holds a {found} item")]
    MixedArray {
        /// The key.
        key: String,
        /// Declared element type.
        elem_type: ValueType,
        /// Type of the offending item.
        found: ValueType,
    },

    /// A boolean stored as something other than 0 or 1.
    #[error("corrupt GGUF: metadata key {key:?} has boolean byte {byte} (expected 0 or 1)")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte read.
        byte: u8,
    },

    /// `general.alignment` has a type other than u32.
    #[error("corrupt GGUF: general.alignment must be a u32 but is a {found}")]
    AlignmentType {
        /// The type found.
        found: ValueType,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("corrupt GGUF: general.alignment {value} is not a non-zero power of two")]
    BadAlignment {
        /// The value found.
        value: u64,
    },

    /// A tensor name of 64 bytes or more (ggml keeps names in `char[64]`).
    #[error("tensor name {name:?} is {len} bytes; ggml allows at most {max}", max = crate::MAX_TENSOR_NAME)]
    TensorNameTooLong {
        /// The name (lossily decoded).
        name: String,
        /// Its length in bytes.
        len: u64,
    },

    /// Two tensors share a name.
    #[error("duplicate tensor name {name:?}")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
    },

    /// More than four dimensions.
    #[error("tensor {name:?} has {n_dims} dimensions; ggml allows at most 4")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Its dimension count.
        n_dims: u64,
    },

    /// A dimension of zero.
    #[error("tensor {name:?} has size 0 in dimension {axis}")]
    ZeroDim {
        /// The tensor.
        name: String,
        /// The axis (0 = ne0).
        axis: usize,
    },

    /// Element count or byte size does not fit in 63 bits.
    #[error("tensor {name:?} has shape {dims:?} whose size overflows")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// Its dimensions, ne0 first.
        dims: Vec<u64>,
    },

    /// A ggml type id this crate does not know.
    #[error("tensor {name:?} has unknown ggml type id {id}: the file is corrupt or needs a newer gguf-sleep")]
    UnknownType {
        /// The tensor.
        name: String,
        /// The id read from the file.
        id: u32,
    },

    /// ne0 is not a multiple of the type's block size.
    #[error("tensor {name:?} of type {ggml_type} has {ne0} elements per row, not a multiple of the block size {block}")]
    NotBlockMultiple {
        /// The tensor.
        name: String,
        /// Its type.
        ggml_type: GgmlType,
        /// Elements per row.
        ne0: u64,
        /// The type's block size.
        block: u64,
    },

    /// A tensor offset that is not a multiple of the alignment.
    #[error("corrupt GGUF: tensor {name:?} offset {offset} is misaligned (alignment {alignment})")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// A tensor whose data lies (partly) beyond the end of the file.
    #[error("tensor {name:?} offset past end of file: its data needs bytes {start}..{end} but the file has {file_len}; the file is truncated or corrupt")]
    PastEnd {
        /// The tensor.
        name: String,
        /// Absolute start of its data.
        start: u64,
        /// Absolute end of its data.
        end: u64,
        /// File length.
        file_len: u64,
    },

    /// A tensor that starts before the previous tensor ends.
    #[error("corrupt GGUF: tensor {name:?} at offset {offset} overlaps previous tensor (expected offset {expected})")]
    Overlap {
        /// The tensor.
        name: String,
        /// Its offset.
        offset: u64,
        /// Where it should start.
        expected: u64,
    },

    /// A tensor that does not start where the previous one (padded) ends.
    #[error("corrupt GGUF: tensor {name:?} at offset {offset} leaves a gap after the previous tensor (expected offset {expected})")]
    Gap {
        /// The tensor.
        name: String,
        /// Its offset.
        offset: u64,
        /// Where it should start.
        expected: u64,
    },

    /// The aligned start of the data section is beyond the end of the file.
    #[error(
        "truncated GGUF: data section starts at byte {data_offset} but the file has {file_len}"
    )]
    DataPastEnd {
        /// Absolute start of the data section.
        data_offset: u64,
        /// File length.
        file_len: u64,
    },

    /// An edit names a tensor the source does not have.
    #[error("no tensor named {name:?} in the model")]
    NoSuchTensor {
        /// The missing name.
        name: String,
    },

    /// A tensor is edited twice, or added under a name that already exists.
    #[error("tensor {name:?} is already present or edited twice")]
    TensorExists {
        /// The name.
        name: String,
    },

    /// New tensor data whose length does not match its type and shape.
    #[error("data for tensor {name:?} is {got} bytes but {ggml_type} {dims:?} needs {expected}")]
    DataSize {
        /// The tensor.
        name: String,
        /// Its type.
        ggml_type: GgmlType,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Bytes the type and shape need.
        expected: u64,
        /// Bytes supplied.
        got: u64,
    },

    /// The output path names the input model.
    #[error("refusing to overwrite the input model {}: choose another output path", path.display())]
    OverwriteInput {
        /// The output path.
        path: PathBuf,
    },

    /// The output path is a directory.
    #[error("output path {} is a directory: give a file name", path.display())]
    OutputIsDir {
        /// The output path.
        path: PathBuf,
    },

    /// The freshly written file did not read back as intended (nothing was renamed into place).
    #[error("the written file {} did not read back correctly: {detail}", path.display())]
    Verify {
        /// The temporary file.
        path: PathBuf,
        /// What went wrong.
        detail: Box<Error>,
    },

    /// The re-read header differs from the one written.
    #[error("header read back differs from the one written ({what})")]
    Mismatch {
        /// The first difference found.
        what: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            cause,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn version_message(version: u32) -> String {
    match version {
        1 => "GGUF version 1 is no longer supported: convert the model again with a current llama.cpp".into(),
        v if v != 0 && v & 0xFFFF == 0 => format!(
            "unsupported GGUF version {v:#x}: the file looks byte-swapped (big-endian GGUF is not supported)"
        ),
        v => format!("unsupported GGUF version {v}: only versions 2 and 3 are supported"),
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull => " (free some disk space or write elsewhere)",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            " (choose a writable location)"
        }
        _ => "",
    }
}
