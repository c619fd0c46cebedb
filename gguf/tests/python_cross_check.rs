//! Files written by this crate, read back by the reference Python reader (`gguf` package, via
//! `py_dump.py`): both readers must agree on every tensor's name, type, shape and bytes and on
//! every metadata key, type and value, in order.

use std::path::Path;
use std::process::Command;

use gguf::testkit::{model_path, GEMMA3, SMOLLM2};
use gguf::{
    write, Array, Edits, GgmlType, GgufFile, GgufString, NewTensor, Value, ValueType, WriteOptions,
};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

fn py_type(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::F32 => "FLOAT32",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F64 => "FLOAT64",
    }
}

fn json_string(s: &GgufString) -> Json {
    match s.as_str() {
        Some(s) => json!(s),
        None => {
            json!({ "hex": s.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>() })
        }
    }
}

/// A scalar in `py_dump.py`'s representation (floats as bit patterns).
fn json_scalar(v: &Value) -> Json {
    match v {
        Value::F32(f) => json!(f.to_bits()),
        Value::F64(f) => json!(f.to_bits()),
        Value::Bool(b) => json!(b),
        Value::String(s) => json_string(s),
        Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) => json!(v.as_i64().unwrap()),
        Value::Array(_) => panic!("nested arrays are not compared"),
        _ => json!(v.as_u64().unwrap()),
    }
}

/// The dump `py_dump.py` should print for `file`, computed by this crate's reader.
fn rust_dump(file: &GgufFile) -> Json {
    let h = file.header();
    let metadata: Vec<Json> = h
        .metadata
        .iter()
        .map(|(k, v)| match v {
            Value::Array(a) => json!([
                k,
                format!("ARRAY[{}]", py_type(a.elem_type)),
                a.items.iter().map(json_scalar).collect::<Vec<_>>()
            ]),
            v => json!([k, py_type(v.value_type()), json_scalar(v)]),
        })
        .collect();
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ggml_type.id(),
                "shape": t.dims,
                "sha256": format!("{:x}", Sha256::digest(file.tensor_data(t))),
            })
        })
        .collect();
    json!({
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "metadata": metadata,
        "tensors": tensors,
    })
}

fn python_dump(path: &Path) -> Json {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py_dump.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&script)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "py_dump.py failed on {} (is the python `gguf` package installed? run scripts/setup.sh): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("py_dump.py prints JSON")
}

fn assert_agree(path: &Path) {
    let file = GgufFile::open(path).unwrap();
    let ours = rust_dump(&file);
    let theirs = python_dump(path);
    for key in ["version", "alignment", "data_offset"] {
        assert_eq!(ours[key], theirs[key], "{}: {key}", path.display());
    }
    let (a, b) = (
        ours["metadata"].as_array().unwrap(),
        theirs["metadata"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{}: metadata count", path.display());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{}: metadata", path.display());
    }
    let (a, b) = (
        ours["tensors"].as_array().unwrap(),
        theirs["tensors"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{}: tensor count", path.display());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{}: tensor", path.display());
    }
}

#[test]
fn python_reader_agrees_with_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WriteOptions::default();

    for model in [SMOLLM2, GEMMA3] {
        let src = GgufFile::open(model_path(model)).unwrap();
        let out = dir.path().join(format!("rewrite-{model}"));
        write(&src, &Edits::default(), &out, &opts).unwrap();
        assert_agree(&out);
        std::fs::remove_file(&out).unwrap();
    }

    let src = GgufFile::open(model_path(SMOLLM2)).unwrap();
    let h = src.header();
    let n_layers = h.arch_u64("block_count").unwrap();
    let mut biased = Edits::new();
    for i in 0..n_layers {
        let weight = format!("blk.{i}.attn_v.weight");
        let n = h.tensor(&weight).unwrap().dims[1];
        let data: Vec<u8> = (0..n)
            .flat_map(|j| (j as f32 * 0.01 - i as f32).to_le_bytes())
            .collect();
        biased.add_tensor(NewTensor {
            name: format!("blk.{i}.attn_v.bias"),
            dims: vec![n],
            ggml_type: GgmlType::F32,
            data,
            after: Some(weight),
        });
    }
    let out = dir.path().join("smollm2-biased.gguf");
    write(&src, &biased, &out, &opts).unwrap();
    assert_agree(&out);

    let mut meta = Edits::new();
    meta.set_metadata("general.name", "edited \u{1F600}")
        .remove_metadata("general.languages")
        .set_metadata("sleep.u8", 255u8)
        .set_metadata("sleep.i8", -128i8)
        .set_metadata("sleep.u16", 65535u16)
        .set_metadata("sleep.i16", -32768i16)
        .set_metadata("sleep.u32", u32::MAX)
        .set_metadata("sleep.i32", i32::MIN)
        .set_metadata("sleep.f32", f32::NAN)
        .set_metadata("sleep.bool", true)
        .set_metadata("sleep.u64", u64::MAX)
        .set_metadata("sleep.i64", i64::MIN)
        .set_metadata("sleep.f64", std::f64::consts::PI)
        .set_metadata("sleep.bytes", GgufString::from_bytes(vec![0xc3, 0x28]))
        .set_metadata(
            "sleep.strings",
            Array::new(ValueType::String, vec!["a".into(), "".into(), "ü\n".into()]),
        )
        .set_metadata(
            "sleep.floats",
            Array::new(ValueType::F32, vec![Value::F32(1.5), Value::F32(-0.0)]),
        )
        .set_metadata(
            "sleep.bools",
            Array::new(ValueType::Bool, vec![Value::Bool(false), Value::Bool(true)]),
        )
        .set_metadata("sleep.empty", Array::new(ValueType::I64, vec![]));
    let out = dir.path().join("smollm2-meta.gguf");
    write(&src, &meta, &out, &opts).unwrap();
    assert_agree(&out);
}
