//! The parsed header of a GGUF file: version, metadata, tensor directory and data layout.
//! Parsing lives in [`crate::reader`], serialization in [`crate::encode`].

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::tensor::{check_name, check_shape, TensorInfo};
use crate::value::{ArrayProblem, Value};

/// Everything before the tensor data: a GGUF file's header, metadata and tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl Header {
    /// Builds a header from metadata and tensor entries, validating both and laying the tensors
    /// out the way gguf.cpp does: offsets are the running sum of sizes padded to the alignment,
    /// and the data section starts at the aligned end of the header. Entry offsets and sizes
    /// are recomputed.
    pub fn new(version: u32, metadata: Metadata, mut tensors: Vec<TensorInfo>) -> Result<Self> {
        if !matches!(version, 2 | 3) {
            return Err(Error::UnsupportedVersion { version });
        }
        check_metadata(&metadata)?;
        let alignment = alignment_of(&metadata)?;
        let mut seen = HashSet::with_capacity(tensors.len());
        let mut offset: u64 = 0;
        for t in &mut tensors {
            check_name(&t.name)?;
            if !seen.insert(t.name.as_str()) {
                return Err(Error::DuplicateTensor {
                    name: t.name.clone(),
                });
            }
            t.size = check_shape(&t.name, &t.dims, t.ggml_type)?;
            t.offset = offset;
            offset =
                pad(offset.checked_add(t.size), alignment).ok_or_else(|| Error::ShapeOverflow {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        let mut header = Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset: 0,
        };
        let end = header.encoded_len();
        header.data_offset = if header.tensors.is_empty() {
            end
        } else {
            pad(Some(end), alignment).ok_or(Error::BadAlignment { value: alignment })?
        };
        Ok(header)
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get_str("general.architecture")
    }

    /// The directory entry named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Position of the tensor named `name` in the directory.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// `{architecture}.{suffix}` as an integer, e.g. `arch_u64("block_count")`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.metadata.get_u64(&format!("{arch}.{suffix}"))
    }

    /// Total bytes of tensor data including padding: the data section's length.
    pub fn data_len(&self) -> u64 {
        self.tensors
            .last()
            .and_then(|t| pad(t.offset.checked_add(t.size), self.alignment))
            .unwrap_or(0)
    }

    /// Length of a file holding this header and all its tensors, padding included.
    pub fn file_len(&self) -> u64 {
        self.data_offset.saturating_add(self.data_len())
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two), `None` on overflow.
pub(crate) fn pad(n: Option<u64>, align: u64) -> Option<u64> {
    let n = n?;
    let rem = n % align.max(1);
    if rem == 0 {
        Some(n)
    } else {
        n.checked_add(align - rem)
    }
}

/// The alignment `metadata` asks for: `general.alignment` (a non-zero power-of-two u32) or 32.
pub(crate) fn alignment_of(metadata: &Metadata) -> Result<u64> {
    match metadata.get(crate::ALIGNMENT_KEY) {
        None => Ok(crate::DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(Value::U32(a)) => Err(Error::BadAlignment {
            value: u64::from(*a),
        }),
        Some(v) => Err(Error::AlignmentType {
            found: v.value_type(),
        }),
    }
}

/// Checks keys (non-empty; uniqueness holds by construction) and arrays (homogeneous, bounded
/// nesting) of metadata about to be written.
fn check_metadata(metadata: &Metadata) -> Result<()> {
    for (i, (key, value)) in metadata.iter().enumerate() {
        if key.is_empty() {
            return Err(Error::EmptyKey { index: i as u64 });
        }
        match value.check_arrays(crate::MAX_ARRAY_DEPTH) {
            Ok(()) => {}
            Err(ArrayProblem::TooDeep) => {
                return Err(Error::ArrayTooDeep {
                    key: key.to_owned(),
                    max: crate::MAX_ARRAY_DEPTH,
                })
            }
            Err(ArrayProblem::Mixed(elem_type, found)) => {
                return Err(Error::MixedArray {
                    key: key.to_owned(),
                    elem_type,
                    found,
                })
            }
        }
    }
    let mut seen = HashSet::with_capacity(metadata.len());
    for key in metadata.keys() {
        if !seen.insert(key) {
            return Err(Error::DuplicateKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}
