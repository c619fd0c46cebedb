//! Serialization of a [`Header`] to GGUF bytes (little-endian, as gguf.cpp writes it).

use crate::header::Header;
use crate::value::Value;

impl Header {
    /// The header as stored in a file: magic, version, counts, metadata, tensor directory, then
    /// zero padding up to `data_offset`. Tensor data follows these bytes directly.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = usize::try_from(self.encoded_len()).unwrap_or(0);
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(crate::MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut out, key.as_bytes());
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        for t in &self.tensors {
            put_str(&mut out, t.name.as_bytes());
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        if let Ok(data_offset) = usize::try_from(self.data_offset) {
            if data_offset > out.len() {
                out.resize(data_offset, 0);
            }
        }
        out
    }

    /// Bytes taken by the header before the data-section padding.
    pub fn encoded_len(&self) -> u64 {
        let mut n: u64 = 4 + 4 + 8 + 8;
        for (key, value) in self.metadata.iter() {
            n = n.saturating_add(8 + key.len() as u64 + 4 + value_len(value));
        }
        for t in &self.tensors {
            n = n.saturating_add(8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8);
        }
        n
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_str(out, s.as_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        Value::Array(a) => {
            out.extend_from_slice(&a.elem_type.id().to_le_bytes());
            out.extend_from_slice(&(a.items.len() as u64).to_le_bytes());
            for item in &a.items {
                put_value(out, item);
            }
        }
    }
}

fn value_len(value: &Value) -> u64 {
    match value {
        Value::String(s) => 8 + s.as_bytes().len() as u64,
        Value::Array(a) => a
            .items
            .iter()
            .fold(12u64, |n, item| n.saturating_add(value_len(item))),
        v => v.value_type().min_encoded_len(),
    }
}
