//! `gguf-sleep diff` on SmolLM2 and a copy edited through the gguf writer: every kind of change
//! is reported, with the right relative size.

mod util;

use std::process::Command;

use gguf::{Edits, GgmlType, GgufFile, NewTensor, WriteOptions};

fn diff_json(a: &std::path::Path, b: &std::path::Path) -> serde_json::Value {
    util::json_of(&[
        "diff".as_ref(),
        "--json".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
    ])
}

fn f32_data(f: &GgufFile, name: &str) -> Vec<f32> {
    f.tensor_bytes(name)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn diff_reports_metadata_and_tensor_changes_with_their_size() {
    let src_path = util::smollm2();
    let src = GgufFile::open(&src_path).unwrap();
    let n_tensors = src.header().tensors.len();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edited.gguf");

    // An F32 norm scaled by 1.25: the relative change is exactly 0.25.
    let norm: Vec<u8> = f32_data(&src, "blk.3.attn_norm.weight")
        .iter()
        .flat_map(|v| (v * 1.25).to_le_bytes())
        .collect();
    let mut e = Edits::new();
    e.replace_tensor("blk.3.attn_norm.weight", GgmlType::F32, norm)
        .add_tensor(NewTensor {
            name: "blk.0.attn_v.bias".into(),
            dims: vec![192],
            ggml_type: GgmlType::F32,
            data: vec![0u8; 192 * 4],
            after: Some("blk.0.attn_v.weight".into()),
        })
        .set_metadata("general.name", "edited")
        .set_metadata("sleep.test", 7u32);
    gguf::write(&src, &e, &out, &WriteOptions::default()).unwrap();

    let d = diff_json(&src_path, &out);
    let meta = d["metadata"].as_array().unwrap();
    let keys: Vec<&str> = meta.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["general.name", "sleep.test"], "{d}");
    assert!(meta[1]["a"].is_null() && meta[1]["b"] == "7", "{d}");
    let tensors = d["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2, "{d}");
    assert_eq!(tensors[0]["status"], "changed");
    assert_eq!(tensors[0]["name"], "blk.3.attn_norm.weight");
    let rel = tensors[0]["rel_change"].as_f64().unwrap();
    assert!((rel - 0.25).abs() < 1e-6, "relative change {rel}");
    assert_eq!(tensors[1]["status"], "added");
    assert_eq!(tensors[1]["name"], "blk.0.attn_v.bias");
    assert_eq!(d["identical_tensors"], n_tensors - 1);
    assert!(d["verdict"].as_str().unwrap().starts_with("different"));

    // The other way round the addition is a removal.
    let back = diff_json(&out, &src_path);
    let removed = back["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.attn_v.bias")
        .unwrap();
    assert_eq!(removed["status"], "removed", "{back}");
}

#[test]
fn a_requantized_tensor_is_compared_by_value() {
    let src_path = util::smollm2();
    let src = GgufFile::open(&src_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f32.gguf");
    let info = src
        .header()
        .tensor("blk.5.ffn_down.weight")
        .unwrap()
        .clone();
    let vals =
        gguf_sleep::engine::dequantize(info.ggml_type, src.tensor_data(&info), info.n_elements())
            .unwrap();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut e = Edits::new();
    e.replace_tensor(&info.name, GgmlType::F32, bytes);
    gguf::write(&src, &e, &out, &WriteOptions::default()).unwrap();

    let d = diff_json(&src_path, &out);
    let t = &d["tensors"][0];
    assert_eq!(t["type_a"], "q4_1", "{d}");
    assert_eq!(t["type_b"], "f32", "{d}");
    // Same values stored at another type: no change by value.
    assert_eq!(t["rel_change"].as_f64().unwrap(), 0.0, "{d}");
}

#[test]
fn a_file_against_itself_is_the_same_and_bad_input_is_one_line() {
    let m = util::smollm2();
    let d = diff_json(&m, &m);
    assert!(d["metadata"].as_array().unwrap().is_empty());
    assert!(d["tensors"].as_array().unwrap().is_empty());
    assert!(d["verdict"].as_str().unwrap().starts_with("same"), "{d}");

    let out = Command::new(util::bin())
        .args(["diff", "/nonexistent/a.gguf"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/a.gguf"), "{err}");
}
