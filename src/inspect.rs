//! `gguf-sleep inspect`: what a GGUF file holds, for people (`Display`) and scripts (JSON).
//!
//! Reads only the header (the file is memory-mapped and validated by [`gguf::GgufFile`]):
//! architecture and hyperparameters as llama.cpp names them, tensor bytes per ggml type, the
//! `sleep.*` provenance keys a patched model carries and, optionally, the full tensor list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use gguf::{GgufFile, Header, Value};
use serde::Serialize;

/// Everything `inspect` reports about one file.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The file inspected.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// GGUF version.
    pub version: u32,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type` as llama.cpp names it, e.g. `MOSTLY_Q4_1`.
    pub file_type: Option<String>,
    /// Transformer blocks (`{arch}.block_count`).
    pub n_layers: Option<u64>,
    /// Attention heads (`{arch}.attention.head_count`).
    pub n_head: Option<u64>,
    /// Key/value heads (`{arch}.attention.head_count_kv`, else `n_head`).
    pub n_head_kv: Option<u64>,
    /// Per-head dimension (`{arch}.attention.key_length`, else `n_embd / n_head`).
    pub head_dim: Option<u64>,
    /// Residual width (`{arch}.embedding_length`).
    pub n_embd: Option<u64>,
    /// MLP width (`{arch}.feed_forward_length`; the largest if given per layer).
    pub n_ff: Option<u64>,
    /// Training context length (`{arch}.context_length`).
    pub context_length: Option<u64>,
    /// Vocabulary size (`{arch}.vocab_size`, else the number of tokenizer tokens).
    pub vocab_size: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
    /// Data alignment.
    pub alignment: u64,
    /// Number of metadata keys.
    pub metadata_keys: usize,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Bytes of tensor data (without padding).
    pub tensor_bytes: u64,
    /// Tensor count and bytes per ggml type, largest first.
    pub types: Vec<TypeSummary>,
    /// All `sleep.*` metadata in file order: what a patch did.
    pub sleep: Vec<MetadataEntry>,
    /// Every tensor, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorRow>>,
}

/// Tensors of one ggml type.
#[derive(Debug, Clone, Serialize)]
pub struct TypeSummary {
    /// ggml type name, e.g. `q4_K`.
    pub ggml_type: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One metadata key with its GGUF type and value.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataEntry {
    /// The key.
    pub key: String,
    /// GGUF value type (`u32`, `str`, `arr`...).
    #[serde(rename = "type")]
    pub value_type: String,
    /// The value (non-finite floats as `null`, non-UTF-8 strings lossily).
    pub value: serde_json::Value,
    /// The value as shown to people (long arrays abbreviated).
    #[serde(skip)]
    pub display: String,
}

/// One tensor directory entry.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    /// Name.
    pub name: String,
    /// ggml type name.
    pub ggml_type: String,
    /// Dims, `ne0` first.
    pub dims: Vec<u64>,
    /// Bytes of data.
    pub bytes: u64,
    /// Offset in the data section.
    pub offset: u64,
}

/// Inspects the GGUF file at `path`; `with_tensors` adds the full tensor list.
pub fn inspect(path: &Path, with_tensors: bool) -> anyhow::Result<InspectReport> {
    let file = GgufFile::open(path)?;
    Ok(report(path, file.len(), file.header(), with_tensors))
}

/// Builds the report for an already parsed header.
pub fn report(path: &Path, file_size: u64, h: &Header, with_tensors: bool) -> InspectReport {
    let m = &h.metadata;
    let arch = h.architecture().map(str::to_owned);
    let hp = |suffix: &str| -> Option<u64> {
        let arch = arch.as_deref()?;
        m.get(&format!("{arch}.{suffix}")).and_then(max_u64)
    };
    let n_head = hp("attention.head_count");
    let n_embd = hp("embedding_length");
    let head_dim = hp("attention.key_length").or_else(|| match (n_embd, n_head) {
        (Some(e), Some(h)) if h > 0 => Some(e / h),
        _ => None,
    });
    let vocab_size = hp("vocab_size").or_else(|| {
        m.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|a| a.len() as u64)
    });

    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &h.tensors {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let mut types: Vec<TypeSummary> = by_type
        .into_iter()
        .map(|(name, (n, bytes))| TypeSummary {
            ggml_type: name.to_owned(),
            tensors: n,
            bytes,
        })
        .collect();
    types.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.ggml_type.cmp(&b.ggml_type)));

    let sleep = m
        .iter()
        .filter(|(k, _)| k.starts_with("sleep."))
        .map(|(k, v)| MetadataEntry {
            key: k.to_owned(),
            value_type: match v {
                Value::Array(a) => format!("arr[{}]", a.elem_type),
                v => v.value_type().to_string(),
            },
            value: to_json(v),
            display: short_display(v),
        })
        .collect();

    InspectReport {
        path: path.to_path_buf(),
        file_size,
        version: h.version,
        name: m
            .get("general.name")
            .and_then(Value::as_gguf_string)
            .map(|s| s.to_string_lossy().into_owned()),
        file_type: m.get_u64("general.file_type").map(file_type_name),
        n_layers: hp("block_count"),
        n_head,
        n_head_kv: hp("attention.head_count_kv").or(n_head),
        head_dim,
        n_embd,
        n_ff: hp("feed_forward_length"),
        context_length: hp("context_length"),
        vocab_size,
        chat_template: m.contains_key("tokenizer.chat_template"),
        alignment: h.alignment,
        metadata_keys: m.len(),
        tensor_count: h.tensors.len(),
        tensor_bytes: h.tensors.iter().map(|t| t.size).sum(),
        types,
        sleep,
        tensors: with_tensors.then(|| {
            h.tensors
                .iter()
                .map(|t| TensorRow {
                    name: t.name.clone(),
                    ggml_type: t.ggml_type.name().to_owned(),
                    dims: t.dims.clone(),
                    bytes: t.size,
                    offset: t.offset,
                })
                .collect()
        }),
        architecture: arch,
    }
}

/// An integer, or the largest integer of an array of them (per-layer hyperparameters).
fn max_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Array(a) => a.items.iter().filter_map(Value::as_u64).max(),
        v => v.as_u64(),
    }
}

/// llama.cpp's name for a `general.file_type` value (`enum llama_ftype`, without the prefix).
pub fn file_type_name(ftype: u64) -> String {
    let name = match ftype {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        39 => "MOSTLY_NVFP4",
        40 => "MOSTLY_Q1_0",
        41 => "MOSTLY_Q2_0",
        1024 => "GUESSED",
        other => return format!("unknown ({other})"),
    };
    name.to_owned()
}

fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(json!(null), Into::into)
        }
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(json!(null), Into::into),
        Value::Bool(b) => json!(b),
        Value::String(s) => json!(s.to_string_lossy()),
        Value::Array(a) => a.items.iter().map(to_json).collect(),
        Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => json!(v.as_i64()),
        _ => json!(v.as_u64()),
    }
}

/// One-line display of a value; arrays longer than 8 items are abbreviated.
pub(crate) fn short_display(v: &Value) -> String {
    const SHOWN: usize = 8;
    match v {
        Value::Array(a) if a.items.len() > SHOWN => {
            let head: Vec<String> = a.items[..SHOWN].iter().map(short_display).collect();
            format!("[{}, ... ({} items)]", head.join(", "), a.items.len())
        }
        v => v.to_string(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let text = |v: &Option<String>| {
            v.as_deref()
                .map_or_else(|| "-".to_owned(), |s| s.escape_debug().to_string())
        };
        writeln!(f, "file            {}", self.path.display())?;
        writeln!(
            f,
            "size            {} ({} bytes)",
            mib(self.file_size),
            self.file_size
        )?;
        writeln!(
            f,
            "gguf            version {}, {} metadata keys, alignment {}",
            self.version, self.metadata_keys, self.alignment
        )?;
        writeln!(f, "architecture    {}", text(&self.architecture))?;
        writeln!(f, "name            {}", text(&self.name))?;
        writeln!(f, "file type       {}", text(&self.file_type))?;
        writeln!(f, "layers          {}", opt(self.n_layers))?;
        writeln!(f, "n_embd          {}", opt(self.n_embd))?;
        writeln!(
            f,
            "heads           {} (kv {}), head_dim {}",
            opt(self.n_head),
            opt(self.n_head_kv),
            opt(self.head_dim)
        )?;
        writeln!(f, "n_ff            {}", opt(self.n_ff))?;
        writeln!(f, "context length  {}", opt(self.context_length))?;
        writeln!(f, "vocab size      {}", opt(self.vocab_size))?;
        writeln!(
            f,
            "chat template   {}",
            if self.chat_template { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "tensors         {} ({})",
            self.tensor_count,
            mib(self.tensor_bytes)
        )?;
        for t in &self.types {
            writeln!(
                f,
                "  {:<8} {:>5} tensors  {:>12} bytes",
                t.ggml_type, t.tensors, t.bytes
            )?;
        }
        if self.sleep.is_empty() {
            writeln!(f, "sleep.*         none (not patched by gguf-sleep)")?;
        } else {
            writeln!(f, "sleep.*")?;
            for e in &self.sleep {
                writeln!(f, "  {} ({}) = {}", e.key, e.value_type, e.display)?;
            }
        }
        if let Some(rows) = &self.tensors {
            writeln!(f, "tensor list")?;
            for t in rows {
                let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
                writeln!(
                    f,
                    "  {:<40} {:<8} {:<20} {:>12}",
                    t.name,
                    t.ggml_type,
                    format!("[{}]", dims.join(", ")),
                    t.bytes
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::testkit::{self, model_path, GEMMA3, SMOLLM2};

    #[test]
    fn smollm2() {
        let r = inspect(&model_path(SMOLLM2), true).unwrap();
        assert_eq!(r.architecture.as_deref(), Some("llama"));
        assert_eq!(r.file_type.as_deref(), Some("MOSTLY_Q4_1"));
        assert_eq!(
            (
                r.n_layers,
                r.n_head,
                r.n_head_kv,
                r.head_dim,
                r.n_embd,
                r.n_ff
            ),
            (Some(30), Some(9), Some(3), Some(64), Some(576), Some(1536))
        );
        assert_eq!((r.context_length, r.vocab_size), (Some(8192), Some(49152)));
        assert!(r.chat_template);
        assert_eq!(r.tensor_count, 272);
        let q41 = r.types.iter().find(|t| t.ggml_type == "q4_1").unwrap();
        assert_eq!(q41.tensors, 210);
        assert_eq!(r.types.iter().map(|t| t.tensors).sum::<usize>(), 272);
        assert!(r.sleep.is_empty());
        assert_eq!(r.tensors.as_ref().unwrap().len(), 272);
        let text = r.to_string();
        assert!(
            text.contains("MOSTLY_Q4_1") && text.contains("heads           9 (kv 3), head_dim 64")
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["n_layers"], 30);
        assert_eq!(json["tensors"][0]["name"], "token_embd.weight");
    }

    #[test]
    fn gemma3() {
        let r = inspect(&model_path(GEMMA3), false).unwrap();
        assert_eq!(r.architecture.as_deref(), Some("gemma3"));
        assert_eq!(r.file_type.as_deref(), Some("MOSTLY_Q4_K_M"));
        assert_eq!(
            (r.n_head, r.n_head_kv, r.head_dim),
            (Some(4), Some(1), Some(256))
        );
        assert_eq!(r.vocab_size, Some(262144));
        assert!(!r.chat_template);
        assert!(r.tensors.is_none());
        assert!(serde_json::to_value(&r).unwrap().get("tensors").is_none());
    }

    #[test]
    fn sleep_keys_are_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("in.gguf");
        std::fs::write(&src_path, testkit::synthetic()).unwrap();
        let src = GgufFile::open(&src_path).unwrap();
        let mut edits = gguf::Edits::new();
        edits
            .set_metadata("sleep.method", "value-bias")
            .set_metadata("sleep.alpha", 0.5f32)
            .set_metadata(
                "sleep.layers",
                gguf::Array::new(gguf::ValueType::U32, (0..20u32).map(Value::U32).collect()),
            );
        let out = dir.path().join("out.gguf");
        gguf::write(&src, &edits, &out, &gguf::WriteOptions::default()).unwrap();
        let r = inspect(&out, false).unwrap();
        let keys: Vec<&str> = r.sleep.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["sleep.method", "sleep.alpha", "sleep.layers"]);
        assert_eq!(r.sleep[1].value, serde_json::json!(0.5));
        assert_eq!(r.sleep[2].value_type, "arr[u32]");
        assert!(
            r.sleep[2].display.ends_with("... (20 items)]"),
            "{}",
            r.sleep[2].display
        );
        let text = r.to_string();
        assert!(
            text.contains("sleep.method (str) = \"value-bias\""),
            "{text}"
        );
        // A name with a newline stays on one line.
        assert!(text.contains("synthetic\\nmodel"), "{text}");
    }

    #[test]
    fn ftype_names() {
        assert_eq!(file_type_name(15), "MOSTLY_Q4_K_M");
        assert_eq!(file_type_name(4), "unknown (4)");
    }
}
