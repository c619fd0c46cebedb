//! The writer and in-place patching on the real test models (see `scripts/fetch-models.sh`).

use std::fs;
use std::path::Path;

use gguf::testkit::{model_path, GEMMA3, SMOLLM2};
use gguf::{
    patch_in_place, write, Edits, GgmlType, GgufFile, Header, NewTensor, Value, WriteOptions,
};
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> String {
    let bytes = fs::read(path).unwrap();
    format!("{:x}", Sha256::digest(&bytes))
}

/// Zero F32 `blk.N.attn_v.bias` tensors, one after each `blk.N.attn_v.weight`.
fn value_biases(h: &Header) -> Vec<NewTensor> {
    let arch = h.architecture().unwrap();
    let n_layers = h.arch_u64("block_count").unwrap();
    let n_head = h.arch_u64("attention.head_count").unwrap();
    let n_head_kv = h.arch_u64("attention.head_count_kv").unwrap_or(n_head);
    let head_dim_v = h
        .arch_u64("attention.value_length")
        .unwrap_or_else(|| h.arch_u64("embedding_length").unwrap() / n_head);
    let n = head_dim_v * n_head_kv;
    (0..n_layers)
        .map(|i| {
            let weight = format!("blk.{i}.attn_v.weight");
            let w = h
                .tensor(&weight)
                .unwrap_or_else(|| panic!("{arch}: no {weight}"));
            assert_eq!(w.dims[1], n, "{weight} output size");
            NewTensor {
                name: format!("blk.{i}.attn_v.bias"),
                dims: vec![n],
                ggml_type: GgmlType::F32,
                data: vec![0; n as usize * 4],
                after: Some(weight),
            }
        })
        .collect()
}

#[test]
fn no_edit_rewrite_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for model in [SMOLLM2, GEMMA3] {
        let input = model_path(model);
        let src = GgufFile::open(&input).unwrap();
        let out = dir.path().join(model);
        let report = write(&src, &Edits::default(), &out, &WriteOptions::default()).unwrap();
        assert_eq!(report.copied, src.header().tensors.len());
        assert_eq!(report.bytes, src.len());
        assert_eq!(sha256(&out), sha256(&input), "{model}");
        fs::remove_file(&out).unwrap();
    }
}

#[test]
fn adding_value_biases_gives_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    for model in [SMOLLM2, GEMMA3] {
        let src = GgufFile::open(model_path(model)).unwrap();
        let h = src.header();
        let biases = value_biases(h);
        let mut edits = Edits::new();
        for b in &biases {
            edits.add_tensor(b.clone());
        }
        let out = dir.path().join(model);
        let report = write(&src, &edits, &out, &WriteOptions::default()).unwrap();
        assert_eq!(report.added, biases.len());

        let got = GgufFile::open(&out).unwrap();
        let g = got.header();
        assert_eq!(g.tensors.len(), h.tensors.len() + biases.len());
        for b in &biases {
            let i = g.tensor_index(&b.name).unwrap();
            assert_eq!(&g.tensors[i - 1].name, b.after.as_ref().unwrap(), "{model}");
            let t = &g.tensors[i];
            assert_eq!((t.ggml_type, &t.dims), (GgmlType::F32, &b.dims));
            assert!(got.tensor_data(t).iter().all(|&x| x == 0));
        }
        // Every original tensor is still there with identical bytes, in the original order.
        let kept: Vec<&str> = g
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !n.ends_with("attn_v.bias"))
            .collect();
        let orig: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(kept, orig);
        for t in &h.tensors {
            assert!(
                got.tensor_bytes(&t.name).unwrap() == src.tensor_data(t),
                "{}",
                t.name
            );
        }
        assert_eq!(g.metadata.len(), h.metadata.len());
        fs::remove_file(&out).unwrap();
    }
}

#[test]
fn metadata_set_and_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_path(SMOLLM2);
    let src = GgufFile::open(&input).unwrap();
    let h = src.header();
    let mut edits = Edits::new();
    edits
        .set_metadata("general.name", "SmolLM2 slept")
        .set_metadata("sleep.method", "value-bias")
        .set_metadata("sleep.alpha", 0.25f32)
        .remove_metadata("general.license");
    let out = dir.path().join("meta.gguf");
    write(&src, &edits, &out, &WriteOptions::default()).unwrap();
    let got = GgufFile::open(&out).unwrap();
    let m = &got.header().metadata;
    assert_eq!(m.get_str("general.name"), Some("SmolLM2 slept"));
    assert_eq!(m.get("sleep.alpha"), Some(&Value::F32(0.25)));
    assert!(m.get("general.license").is_none());
    let expected: Vec<&str> = h
        .metadata
        .keys()
        .filter(|k| *k != "general.license")
        .chain(["sleep.method", "sleep.alpha"])
        .collect();
    assert!(m.keys().eq(expected), "key order");
    for (k, v) in h.metadata.iter() {
        if k != "general.name" && k != "general.license" {
            assert_eq!(m.get(k), Some(v), "{k}");
        }
    }

    // Undo the edits: the result is the original file again.
    let back = dir.path().join("back.gguf");
    let mut undo = Edits::new();
    undo.set_metadata(
        "general.name",
        h.metadata.get("general.name").unwrap().clone(),
    )
    .remove_metadata("sleep.method")
    .remove_metadata("sleep.alpha");
    let first = h
        .metadata
        .keys()
        .position(|k| k == "general.license")
        .unwrap();
    // Re-inserting a key in the middle is not an edit the writer offers, so compare the rest.
    write(&got, &undo, &back, &WriteOptions::default()).unwrap();
    let again = GgufFile::open(&back).unwrap();
    let mut keys: Vec<&str> = h.metadata.keys().collect();
    keys.remove(first);
    assert!(again.header().metadata.keys().eq(keys));
    for t in &h.tensors {
        assert!(again.tensor_bytes(&t.name).unwrap() == src.tensor_data(t));
    }
}

#[test]
fn patch_in_place_changes_only_that_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_path(SMOLLM2);
    let copy = dir.path().join("copy.gguf");
    fs::copy(&input, &copy).unwrap();
    let before = fs::read(&copy).unwrap();
    let h = Header::parse(&before).unwrap();
    let t = h.tensor("blk.3.attn_v.weight").unwrap();
    let start = (h.data_offset + t.offset) as usize;
    let end = start + t.size as usize;
    let new: Vec<u8> = before[start..end].iter().map(|b| b ^ 0x5a).collect();

    patch_in_place(&copy, &[(t.name.clone(), new.clone())]).unwrap();
    let after = fs::read(&copy).unwrap();
    assert_eq!(after.len(), before.len());
    assert!(after[..start] == before[..start]);
    assert!(after[start..end] == new[..]);
    assert!(after[end..] == before[end..]);
    assert_eq!(
        sha256(&input),
        sha256_bytes(&before),
        "the model itself is untouched"
    );
}

fn sha256_bytes(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}
