//! Test support shared by this crate's tests, the command-line tests and the fuzz seeds:
//! locating the real test models, building small synthetic GGUF files and generating a corpus
//! of corrupt files from a valid one. Not part of the supported API.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::header::{pad, Header};
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;
use crate::types::GgmlType;
use crate::value::{Array, GgufString, Value, ValueType};

/// File name of the llama-architecture test model (Q4_1).
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name of the gemma3-architecture test model (Q4_K_M).
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// Directory holding the test models: `$GGUF_SLEEP_MODELS`, else `$HOME/.cache/gguf-sleep`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GGUF_SLEEP_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache").join("gguf-sleep")
}

/// Path of test model `file`. Panics (failing the test) when it is missing.
pub fn model_path(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set GGUF_SLEEP_MODELS to the directory holding it)",
        path.display()
    );
    path
}

/// Little-endian bytes of `values`.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A complete file: `header` followed by each tensor's data, zero-padded to the alignment.
pub fn build(header: &Header, data: &[&[u8]]) -> Vec<u8> {
    let mut out = header.to_bytes();
    for (t, d) in header.tensors.iter().zip(data) {
        out.extend_from_slice(d);
        let end = t.offset + t.size;
        let padded = pad(Some(end), header.alignment).unwrap_or(end);
        out.resize(out.len() + (padded - end) as usize, 0);
    }
    out
}

/// Metadata with one value of every type, nested and empty arrays, and a non-UTF-8 string.
pub fn sample_metadata() -> Metadata {
    let mut m = Metadata::new();
    m.set("general.architecture", "llama");
    m.set("general.name", "synthetic\nmodel");
    m.set("t.u8", 200u8);
    m.set("t.i8", -100i8);
    m.set("t.u16", 60000u16);
    m.set("t.i16", -30000i16);
    m.set("t.u32", 4_000_000_000u32);
    m.set("t.i32", -2_000_000_000i32);
    m.set("t.f32", f32::from_bits(0x7fc0_0001)); // a NaN payload must survive
    m.set("t.bool", true);
    m.set("t.u64", u64::MAX);
    m.set("t.i64", i64::MIN);
    m.set("t.f64", -0.0f64);
    m.set("t.bytes", GgufString::from_bytes(vec![0xff, 0x00, b'x']));
    m.set(
        "t.strs",
        Array::new(ValueType::String, vec!["a".into(), "".into(), "ü".into()]),
    );
    m.set("t.empty", Array::new(ValueType::F64, vec![]));
    let inner = |v: &[i32]| {
        Value::Array(Array::new(
            ValueType::I32,
            v.iter().map(|&x| x.into()).collect(),
        ))
    };
    m.set(
        "t.nested",
        Array::new(
            ValueType::Array,
            vec![inner(&[1, 2]), inner(&[]), inner(&[-3])],
        ),
    );
    m.set("llama.block_count", 1u32);
    m
}

/// A small valid GGUF file: [`sample_metadata`] and three tensors (f32, q4_0, q8_0) with
/// deterministic data.
pub fn synthetic() -> Vec<u8> {
    let tensors = vec![
        TensorInfo::new("blk.0.attn_v.weight", vec![64, 2], GgmlType::Q4_0),
        TensorInfo::new("blk.0.attn_norm.weight", vec![3], GgmlType::F32),
        TensorInfo::new("output.weight", vec![32, 1, 1, 2], GgmlType::Q8_0),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .expect("synthetic tensors are valid");
    let header = Header::new(3, sample_metadata(), tensors).expect("synthetic header is valid");
    let data: Vec<Vec<u8>> = header
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (0..t.size)
                .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect()
        })
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    build(&header, &refs)
}

/// Byte positions of the fields of one tensor directory entry.
#[derive(Debug, Clone, Copy)]
pub struct TensorFields {
    /// The name's length prefix.
    pub name_at: u64,
    /// `n_dims`.
    pub n_dims_at: u64,
    /// The first dimension.
    pub dims_at: u64,
    /// The ggml type id.
    pub type_at: u64,
    /// The data offset.
    pub offset_at: u64,
}

/// Where the sections and fields of a file with header `h` lie.
#[derive(Debug, Clone)]
pub struct Layout {
    /// End of the metadata section (start of the tensor directory).
    pub metadata_end: u64,
    /// End of the tensor directory.
    pub directory_end: u64,
    /// Start of the data section.
    pub data_offset: u64,
    /// Each directory entry's fields.
    pub tensors: Vec<TensorFields>,
}

/// Computes the [`Layout`] of a file whose header is `h` (as written by this crate).
pub fn layout(h: &Header) -> Layout {
    let meta_only = Header {
        tensors: vec![],
        ..h.clone()
    };
    let metadata_end = meta_only.encoded_len();
    let mut pos = metadata_end;
    let mut tensors = Vec::with_capacity(h.tensors.len());
    for t in &h.tensors {
        let name_at = pos;
        let n_dims_at = name_at + 8 + t.name.len() as u64;
        let dims_at = n_dims_at + 4;
        let type_at = dims_at + 8 * t.dims.len() as u64;
        let offset_at = type_at + 4;
        pos = offset_at + 8;
        tensors.push(TensorFields {
            name_at,
            n_dims_at,
            dims_at,
            type_at,
            offset_at,
        });
    }
    Layout {
        metadata_end,
        directory_end: pos,
        data_offset: h.data_offset,
        tensors,
    }
}

/// How a corrupt file is derived from a valid one.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Keep only the first `n` bytes.
    Truncate(u64),
    /// Overwrite bytes at `at`.
    Patch {
        /// Absolute position.
        at: u64,
        /// The new bytes.
        bytes: Vec<u8>,
    },
}

/// One corrupt variant of a valid file, with a check of the error the reader must give.
#[derive(Debug, Clone)]
pub struct Corrupt {
    /// A short file-name-safe description, e.g. `trunc-metadata-0001234`.
    pub name: String,
    /// The change.
    pub mutation: Mutation,
    /// Whether an error is the one expected for this corruption.
    pub expect: fn(&Error) -> bool,
}

impl Corrupt {
    /// The corrupt bytes derived from `valid`.
    pub fn apply(&self, valid: &[u8]) -> Vec<u8> {
        match &self.mutation {
            Mutation::Truncate(n) => valid[..(*n as usize).min(valid.len())].to_vec(),
            Mutation::Patch { at, bytes } => {
                let mut out = valid.to_vec();
                let at = *at as usize;
                out[at..at + bytes.len()].copy_from_slice(bytes);
                out
            }
        }
    }

    /// Writes the corrupt file to `path`.
    pub fn write(&self, valid: &[u8], path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.apply(valid))
    }
}

fn is_short(e: &Error) -> bool {
    matches!(
        e,
        Error::Truncated { .. }
            | Error::StringTooLong { .. }
            | Error::CountTooLarge { .. }
            | Error::PastEnd { .. }
            | Error::DataPastEnd { .. }
    )
}

/// Corrupt variants of the valid file `valid` (which must parse): truncations spread over the
/// fixed header, metadata, tensor directory, padding and data (at least 50 when the file is
/// large enough), then single-field corruptions: bad magic, versions 1 and 99, tensor count
/// 2^60, key count 2^60, a string length past the end, a tensor offset past the end, a
/// misaligned offset, overlapping tensors, an unknown type id, five dims and a zero dim.
pub fn corrupt_corpus(valid: &[u8]) -> Vec<Corrupt> {
    let h = Header::parse(valid).expect("corrupt_corpus needs a valid file");
    let l = layout(&h);
    let len = valid.len() as u64;
    let mut cuts: Vec<(&str, u64)> = Vec::new();
    for n in [0, 1, 3, 4, 6, 8, 12, 16, 20, 23] {
        cuts.push(("fixed", n));
    }
    let spread = |from: u64, to: u64, k: u64| -> Vec<u64> {
        if to <= from {
            return vec![];
        }
        (0..k).map(|i| from + (to - from) * i / k).collect()
    };
    for n in spread(24, l.metadata_end, 20) {
        cuts.push(("metadata", n));
    }
    for n in spread(l.metadata_end, l.directory_end, 12) {
        cuts.push(("directory", n));
    }
    if l.data_offset > l.directory_end {
        cuts.push((
            "padding",
            l.directory_end + (l.data_offset - l.directory_end) / 2,
        ));
    }
    // Only the tensor data is required: the last tensor's trailing padding is optional.
    let data_end = h
        .tensors
        .last()
        .map_or(l.data_offset, |t| h.data_offset + t.offset + t.size);
    for n in spread(l.data_offset, data_end, 8) {
        cuts.push(("data", n));
    }
    if data_end > l.data_offset {
        cuts.push(("data", data_end - 1));
    }
    cuts.sort_by_key(|c| c.1);
    cuts.dedup_by_key(|c| c.1);

    let mut out: Vec<Corrupt> = cuts
        .into_iter()
        .filter(|&(_, n)| n < data_end)
        .map(|(region, n)| Corrupt {
            name: format!("trunc-{region}-{n:010}"),
            mutation: Mutation::Truncate(n),
            expect: is_short,
        })
        .collect();

    let patch = |name: &str, at: u64, bytes: Vec<u8>, expect: fn(&Error) -> bool| Corrupt {
        name: name.into(),
        mutation: Mutation::Patch { at, bytes },
        expect,
    };
    out.push(patch("bad-magic", 0, b"GGML".to_vec(), |e| {
        matches!(e, Error::BadMagic { .. })
    }));
    out.push(patch("version-99", 4, 99u32.to_le_bytes().to_vec(), |e| {
        matches!(e, Error::UnsupportedVersion { version: 99 })
    }));
    out.push(patch("version-1", 4, 1u32.to_le_bytes().to_vec(), |e| {
        matches!(e, Error::UnsupportedVersion { version: 1 })
    }));
    out.push(patch(
        "tensor-count-2e60",
        8,
        (1u64 << 60).to_le_bytes().to_vec(),
        |e| matches!(e, Error::CountTooLarge { count, .. } if *count == 1 << 60),
    ));
    out.push(patch(
        "kv-count-2e60",
        16,
        (1u64 << 60).to_le_bytes().to_vec(),
        |e| matches!(e, Error::CountTooLarge { count, .. } if *count == 1 << 60),
    ));
    if !h.metadata.is_empty() {
        out.push(patch(
            "key-length-past-end",
            24,
            (len - 24 - 8 + 1).to_le_bytes().to_vec(),
            |e| matches!(e, Error::StringTooLong { .. }),
        ));
    }
    if let (Some(first), Some(last)) = (l.tensors.first(), l.tensors.last()) {
        let past = pad(Some(len - h.data_offset + 1), h.alignment).unwrap_or(u64::MAX);
        out.push(patch(
            "offset-past-end",
            last.offset_at,
            past.to_le_bytes().to_vec(),
            |e| matches!(e, Error::PastEnd { .. }),
        ));
        out.push(patch(
            "unknown-type-99",
            first.type_at,
            99u32.to_le_bytes().to_vec(),
            |e| matches!(e, Error::UnknownType { id: 99, .. }),
        ));
        out.push(patch(
            "five-dims",
            first.n_dims_at,
            5u32.to_le_bytes().to_vec(),
            |e| matches!(e, Error::TooManyDims { n_dims: 5, .. }),
        ));
        out.push(patch(
            "zero-dim",
            first.dims_at,
            0u64.to_le_bytes().to_vec(),
            |e| matches!(e, Error::ZeroDim { axis: 0, .. }),
        ));
    }
    if let (Some(t1), Some(f1)) = (h.tensors.get(1), l.tensors.get(1)) {
        out.push(patch(
            "misaligned-offset",
            f1.offset_at,
            (t1.offset + 1).to_le_bytes().to_vec(),
            |e| matches!(e, Error::Misaligned { .. }),
        ));
        out.push(patch(
            "overlapping-tensors",
            f1.offset_at,
            h.tensors[0].offset.to_le_bytes().to_vec(),
            |e| matches!(e, Error::Overlap { .. }),
        ));
    }
    out
}
