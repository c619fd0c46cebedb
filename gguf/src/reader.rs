//! Parsing and validation of a GGUF header against the bytes of the whole file.
//!
//! The checks follow llama.cpp's `gguf.cpp` loader and add the ones its model loader makes
//! later (tensor data inside the file). Counts read from the file are bounded by the bytes
//! that remain before anything is allocated for them.

use std::collections::HashSet;

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::header::{alignment_of, pad, Header};
use crate::metadata::Metadata;
use crate::tensor::check_shape;
use crate::tensor::TensorInfo;
use crate::types::GgmlType;
use crate::value::{Array, GgufString, Value, ValueType};

/// Smallest metadata entry: key length, a one-byte key, type id, a one-byte value.
const MIN_KV_LEN: u64 = 8 + 1 + 4 + 1;
/// Smallest tensor info: name length, empty name, n_dims, type id, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 4 + 8;

impl Header {
    /// Parses and validates the header of a GGUF file whose complete contents are `bytes`.
    ///
    /// Besides the structure itself this checks that every tensor's data lies inside `bytes`,
    /// aligned, in directory order and exactly where gguf.cpp expects it.
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let mut c = Cursor::new(bytes);
        let file_len = bytes.len() as u64;

        let magic: [u8; 4] = match c.array(|| "magic".into()) {
            Ok(m) => m,
            Err(e) if crate::MAGIC.starts_with(bytes) => return Err(e),
            Err(_) => {
                let mut found = [0u8; 4];
                found[..bytes.len()].copy_from_slice(bytes);
                return Err(Error::BadMagic { found });
            }
        };
        if &magic != crate::MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = c.u32(|| "version".into())?;
        if !matches!(version, 2 | 3) {
            return Err(Error::UnsupportedVersion { version });
        }
        let n_tensors = c.u64(|| "tensor count".into())?;
        check_count(&c, n_tensors, MIN_TENSOR_INFO_LEN, || "tensor count".into())?;
        let n_kv = c.u64(|| "metadata key count".into())?;
        check_count(&c, n_kv, MIN_KV_LEN, || "metadata key count".into())?;

        let metadata = read_metadata(&mut c, n_kv)?;
        let alignment = alignment_of(&metadata)?;
        let tensors = read_tensor_infos(&mut c, n_tensors)?;

        let header_end = c.pos();
        let data_offset = if tensors.is_empty() {
            header_end
        } else {
            pad(Some(header_end), alignment).unwrap_or(u64::MAX)
        };
        if data_offset > file_len {
            return Err(Error::DataPastEnd {
                data_offset,
                file_len,
            });
        }
        check_layout(&tensors, alignment, data_offset, file_len)?;

        Ok(Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

/// Rejects a count whose smallest possible encoding would not fit in the remaining bytes.
fn check_count(
    c: &Cursor<'_>,
    count: u64,
    min_len: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if count > c.remaining() / min_len {
        return Err(Error::CountTooLarge {
            what: what(),
            count,
            remaining: c.remaining(),
        });
    }
    Ok(())
}

fn read_string<'a>(c: &mut Cursor<'a>, what: impl Fn() -> String) -> Result<&'a [u8]> {
    let len = c.u64(|| format!("length of {}", what()))?;
    let max = c.remaining().min(crate::MAX_STRING_LEN);
    if len > max {
        return Err(Error::StringTooLong {
            what: what(),
            len,
            max,
        });
    }
    c.take(len, what)
}

fn read_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<Metadata> {
    // n_kv is bounded by the remaining bytes (check_count), so this allocation is too.
    let mut metadata = Metadata::with_capacity(n_kv as usize);
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let raw = read_string(c, || format!("metadata key {i}"))?;
        let key = std::str::from_utf8(raw).map_err(|_| Error::InvalidUtf8 {
            what: format!("metadata key {i} ({:?})", String::from_utf8_lossy(raw)),
        })?;
        if key.is_empty() {
            return Err(Error::EmptyKey { index: i });
        }
        if !seen.insert(raw) {
            return Err(Error::DuplicateKey { key: key.into() });
        }
        let id = c.u32(|| format!("type of metadata key {key:?}"))?;
        let ty = ValueType::from_id(id).ok_or_else(|| Error::UnknownValueType {
            key: key.into(),
            id,
        })?;
        let value = read_value(c, ty, key, 0)?;
        metadata.push_unchecked(key.to_owned(), value);
    }
    Ok(metadata)
}

/// Reads one value of type `ty`; `depth` is the number of enclosing arrays.
fn read_value(c: &mut Cursor<'_>, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("value of metadata key {key:?}");
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8(what)?),
        ValueType::I8 => Value::I8(c.u8(what)? as i8),
        ValueType::U16 => Value::U16(c.u16(what)?),
        ValueType::I16 => Value::I16(c.u16(what)? as i16),
        ValueType::U32 => Value::U32(c.u32(what)?),
        ValueType::I32 => Value::I32(c.u32(what)? as i32),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32(what)?)),
        ValueType::U64 => Value::U64(c.u64(what)?),
        ValueType::I64 => Value::I64(c.u64(what)? as i64),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64(what)?)),
        ValueType::Bool => match c.u8(what)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            byte => {
                return Err(Error::InvalidBool {
                    key: key.into(),
                    byte,
                })
            }
        },
        ValueType::String => Value::String(GgufString::from_bytes(read_string(c, what)?.to_vec())),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array> {
    if depth >= crate::MAX_ARRAY_DEPTH {
        return Err(Error::ArrayTooDeep {
            key: key.into(),
            max: crate::MAX_ARRAY_DEPTH,
        });
    }
    let id = c.u32(|| format!("array type of metadata key {key:?}"))?;
    let elem_type = ValueType::from_id(id).ok_or_else(|| Error::UnknownValueType {
        key: key.into(),
        id,
    })?;
    let n = c.u64(|| format!("array length of metadata key {key:?}"))?;
    if n > crate::MAX_ARRAY_LEN {
        return Err(Error::CountTooLarge {
            what: format!("array length of metadata key {key:?}"),
            count: n,
            remaining: c.remaining(),
        });
    }
    check_count(c, n, elem_type.min_encoded_len(), || {
        format!("array length of metadata key {key:?}")
    })?;
    let mut items = Vec::with_capacity(n as usize);
    for _ in 0..n {
        items.push(read_value(c, elem_type, key, depth + 1)?);
    }
    Ok(Array { elem_type, items })
}

fn read_tensor_infos(c: &mut Cursor<'_>, n_tensors: u64) -> Result<Vec<TensorInfo>> {
    check_count(c, n_tensors, MIN_TENSOR_INFO_LEN, || "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let raw = read_string(c, || format!("name of tensor {i}"))?;
        if raw.len() > crate::MAX_TENSOR_NAME {
            return Err(Error::TensorNameTooLong {
                name: String::from_utf8_lossy(raw).into_owned(),
                len: raw.len() as u64,
            });
        }
        let name = std::str::from_utf8(raw).map_err(|_| Error::InvalidUtf8 {
            what: format!("name of tensor {i} ({:?})", String::from_utf8_lossy(raw)),
        })?;
        if !seen.insert(raw) {
            return Err(Error::DuplicateTensor { name: name.into() });
        }
        let what = || format!("info of tensor {name:?}");
        let n_dims = c.u32(what)?;
        if n_dims as usize > crate::MAX_DIMS {
            return Err(Error::TooManyDims {
                name: name.into(),
                n_dims: n_dims.into(),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(what)?);
        }
        let id = c.u32(what)?;
        let ggml_type = GgmlType::from_id(id).ok_or_else(|| Error::UnknownType {
            name: name.into(),
            id,
        })?;
        let size = check_shape(name, &dims, ggml_type)?;
        let offset = c.u64(what)?;
        tensors.push(TensorInfo {
            name: name.to_owned(),
            dims,
            ggml_type,
            offset,
            size,
        });
    }
    Ok(tensors)
}

/// Checks that tensors are aligned, inside the file, in order and back to back: each starts at
/// the running sum of the previous sizes padded to the alignment, as gguf.cpp requires.
fn check_layout(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let mut expected: u64 = 0;
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(Error::Misaligned {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(t.size));
        if end.is_none_or(|end| end > file_len) {
            return Err(Error::PastEnd {
                name: t.name.clone(),
                start: data_offset.saturating_add(t.offset),
                end: end.unwrap_or(u64::MAX),
                file_len,
            });
        }
        if t.offset < expected {
            return Err(Error::Overlap {
                name: t.name.clone(),
                offset: t.offset,
                expected,
            });
        }
        if t.offset > expected {
            return Err(Error::Gap {
                name: t.name.clone(),
                offset: t.offset,
                expected,
            });
        }
        // offset + size <= file_len, so only the padding could overflow.
        expected = pad(Some(t.offset + t.size), alignment).unwrap_or(u64::MAX);
    }
    Ok(())
}
