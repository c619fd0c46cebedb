//! `gguf-sleep inspect --json [--tensors]` on the real models: the values llama.cpp's loader
//! would read, the tensor table, and the `sleep.*` provenance of a patched file.

mod util;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn inspect(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect".as_ref(), path.as_os_str(), "--json".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    util::json_of(&args)
}

fn type_count(j: &Value, ty: &str) -> u64 {
    j["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ggml_type"] == ty)
        .map_or(0, |t| t["tensors"].as_u64().unwrap())
}

/// The tensor counts and bytes per type add up to the totals.
fn check_totals(j: &Value) {
    let types = j["types"].as_array().unwrap();
    let n: u64 = types.iter().map(|t| t["tensors"].as_u64().unwrap()).sum();
    let bytes: u64 = types.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(n, j["tensor_count"].as_u64().unwrap());
    assert_eq!(bytes, j["tensor_bytes"].as_u64().unwrap());
    assert!(bytes < j["file_size"].as_u64().unwrap());
}

#[test]
fn smollm2() {
    let path = util::smollm2();
    let j = inspect(&path, &[]);
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["n_layers"], 30);
    assert_eq!(j["n_head"], 9);
    assert_eq!(j["n_head_kv"], 3);
    assert_eq!(j["head_dim"], 64);
    assert_eq!(j["n_embd"], 576);
    assert_eq!(j["n_ff"], 1536);
    assert_eq!(j["context_length"], 8192);
    assert_eq!(j["vocab_size"], 49152);
    assert_eq!(j["chat_template"], true);
    assert_eq!(j["file_type"], "MOSTLY_Q4_1");
    assert_eq!(j["version"], 3);
    assert_eq!(j["tensor_count"], 272);
    assert_eq!(j["file_size"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(type_count(&j, "q4_1"), 210);
    assert_eq!(type_count(&j, "q8_0"), 1);
    assert_eq!(type_count(&j, "f32"), 61);
    check_totals(&j);
    assert_eq!(j["sleep"], serde_json::json!([]));
    assert!(
        j.get("tensors").is_none(),
        "no tensor list without --tensors"
    );

    let j = inspect(&path, &["--tensors"]);
    let rows = j["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), 272);
    let v = rows
        .iter()
        .find(|t| t["name"] == "blk.0.attn_v.weight")
        .unwrap();
    assert_eq!(v["ggml_type"], "q4_1");
    assert_eq!(v["dims"], serde_json::json!([576, 192]));
    assert_eq!(v["bytes"], 576 / 32 * 20 * 192);
}

#[test]
fn gemma3() {
    let path = util::gemma3();
    let j = inspect(&path, &["--tensors"]);
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["n_layers"], 18);
    assert_eq!(j["n_head"], 4);
    assert_eq!(j["n_head_kv"], 1);
    assert_eq!(j["head_dim"], 256);
    assert_eq!(j["n_embd"], 640);
    assert_eq!(j["n_ff"], 2048);
    assert_eq!(j["context_length"], 32768);
    assert_eq!(j["vocab_size"], 262144);
    assert_eq!(j["chat_template"], false);
    assert_eq!(j["file_type"], "MOSTLY_Q4_K_M");
    assert_eq!(j["tensor_count"], 236);
    assert_eq!(type_count(&j, "q4_K"), 27);
    assert_eq!(type_count(&j, "q6_K"), 9);
    assert_eq!(type_count(&j, "q5_0"), 81);
    assert_eq!(type_count(&j, "q8_0"), 10);
    assert_eq!(type_count(&j, "f32"), 109);
    check_totals(&j);
    assert_eq!(j["tensors"].as_array().unwrap().len(), 236);
}

/// A file carrying `sleep.*` keys shows them, typed and in file order; the text form shows
/// them too.
#[test]
fn sleep_provenance_is_shown() {
    let src = gguf::GgufFile::open(util::smollm2()).unwrap();
    let mut edits = gguf::Edits::new();
    edits
        .set_metadata("sleep.method", "value-bias")
        .set_metadata("sleep.strength", 0.75f32)
        .set_metadata("sleep.prompt_sha256", "ab".repeat(32));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("provenance.gguf");
    gguf::write(&src, &edits, &out, &gguf::WriteOptions::default()).unwrap();

    let j = inspect(&out, &[]);
    let sleep = j["sleep"].as_array().unwrap();
    let keys: Vec<&str> = sleep.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["sleep.method", "sleep.strength", "sleep.prompt_sha256"]
    );
    assert_eq!(sleep[0]["type"], "str");
    assert_eq!(sleep[0]["value"], "value-bias");
    assert_eq!(sleep[1]["type"], "f32");
    assert_eq!(sleep[1]["value"], 0.75);

    let text = Command::new(util::bin())
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("sleep.method (str) = \"value-bias\""),
        "{text}"
    );
    assert!(text.contains("architecture    llama"), "{text}");
}
