//! The streamed writer and in-place patching, on small synthetic files.

use std::fs;
use std::path::{Path, PathBuf};

use gguf::testkit::{self, f32_bytes};
use gguf::{
    patch_in_place, write, Edits, Error, GgmlType, GgufFile, NewTensor, Value, WriteOptions,
};

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.gguf");
    fs::write(&path, testkit::synthetic()).unwrap();
    (dir, path)
}

/// Names in `dir` other than the input and `keep`: must be empty after any write.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "in.gguf" && !keep.contains(&n.as_str()))
        .collect()
}

fn new_f32(name: &str, values: &[f32], after: Option<&str>) -> NewTensor {
    NewTensor {
        name: name.into(),
        dims: vec![values.len() as u64],
        ggml_type: GgmlType::F32,
        data: f32_bytes(values),
        after: after.map(Into::into),
    }
}

#[test]
fn no_edits_is_byte_identical() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    let report = write(&src, &Edits::new(), &out, &WriteOptions::default()).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
    assert_eq!((report.copied, report.replaced, report.added), (3, 0, 0));
    assert_eq!(report.bytes, fs::metadata(&out).unwrap().len());
    assert!(leftovers(dir.path(), &["out.gguf"]).is_empty());
}

/// Untouched tensors are copied in runs, padding included only where the source's padding is
/// zero: non-zero padding bytes in the source come out as zeros, the tensor data unchanged.
#[test]
fn nonzero_source_padding_is_written_as_zeros() {
    let (dir, input) = setup();
    let mut bytes = fs::read(&input).unwrap();
    let h = gguf::Header::parse(&bytes).unwrap();
    let t0 = &h.tensors[0];
    let end = (h.data_offset + t0.offset + t0.size) as usize;
    let next = (h.data_offset + h.tensors[1].offset) as usize;
    assert!(
        next > end,
        "the synthetic file has padding after its first tensor"
    );
    bytes[end..next].fill(0xEE);
    let dirty = dir.path().join("dirty.gguf");
    fs::write(&dirty, &bytes).unwrap();
    let src = GgufFile::open(&dirty).unwrap();
    let out = dir.path().join("out.gguf");
    write(&src, &Edits::new(), &out, &WriteOptions::default()).unwrap();
    assert!(fs::read(&out).unwrap() == fs::read(&input).unwrap());
}

/// The source path replaced (by a rename) after opening: the writer copies from the file it
/// opened, not from whatever the path names now.
#[test]
fn source_replaced_after_open_still_copies_the_opened_file() {
    let (dir, input) = setup();
    let original = fs::read(&input).unwrap();
    let src = GgufFile::open(&input).unwrap();
    let other = dir.path().join("other.gguf");
    let mut changed = original.clone();
    let h = src.header();
    let first = (h.data_offset + h.tensors[0].offset) as usize;
    changed[first..first + 4].copy_from_slice(&[0xAB; 4]);
    assert!(changed != original);
    fs::write(&other, &changed).unwrap();
    fs::rename(&other, &input).unwrap();
    let out = dir.path().join("out.gguf");
    write(&src, &Edits::new(), &out, &WriteOptions::default()).unwrap();
    assert!(fs::read(&out).unwrap() == original);
}

#[test]
fn replace_add_and_metadata_edits() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    let norm = f32_bytes(&[1.0, 2.0, 3.0]);
    let norm_f16: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|&v| half_bits(v).to_le_bytes())
        .collect();
    let mut edits = Edits::new();
    edits
        .replace_tensor("blk.0.attn_norm.weight", GgmlType::F16, norm_f16.clone())
        .add_tensor(new_f32(
            "blk.0.attn_v.bias",
            &[0.5; 2],
            Some("blk.0.attn_v.weight"),
        ))
        .add_tensor(new_f32("extra.b", &[2.0; 3], Some("extra.a")))
        .add_tensor(new_f32("extra.a", &[1.0; 5], None))
        .add_tensor(new_f32(
            "blk.0.attn_v.bias2",
            &[0.25; 1],
            Some("blk.0.attn_v.weight"),
        ))
        .set_metadata("general.name", "renamed")
        .set_metadata("sleep.method", "value-bias")
        .remove_metadata("t.u8")
        .remove_metadata("not.there");
    let report = write(&src, &edits, &out, &WriteOptions::default()).unwrap();
    assert_eq!((report.copied, report.replaced, report.added), (2, 1, 4));

    let got = GgufFile::open(&out).unwrap();
    let h = got.header();
    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_v.weight",
            "blk.0.attn_v.bias",
            "blk.0.attn_v.bias2",
            "blk.0.attn_norm.weight",
            "output.weight",
            "extra.a",
            "extra.b"
        ]
    );
    let norm_info = h.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!((norm_info.ggml_type, norm_info.size), (GgmlType::F16, 6));
    assert_eq!(got.tensor_data(norm_info), norm_f16.as_slice());
    assert_ne!(norm_f16, norm);
    assert_eq!(
        got.tensor_bytes("extra.b").unwrap(),
        f32_bytes(&[2.0; 3]).as_slice()
    );
    assert_eq!(
        got.tensor_bytes("blk.0.attn_v.bias").unwrap(),
        f32_bytes(&[0.5; 2]).as_slice()
    );
    for name in ["blk.0.attn_v.weight", "output.weight"] {
        assert_eq!(got.tensor_bytes(name), src.tensor_bytes(name), "{name}");
    }
    for t in &h.tensors {
        assert_eq!(t.offset % 32, 0);
    }

    let src_keys: Vec<&str> = src
        .header()
        .metadata
        .keys()
        .filter(|k| *k != "t.u8")
        .collect();
    let out_keys: Vec<&str> = h.metadata.keys().collect();
    assert_eq!(out_keys[..out_keys.len() - 1], src_keys[..]);
    assert_eq!(out_keys.last(), Some(&"sleep.method"));
    assert_eq!(h.metadata.get_str("general.name"), Some("renamed"));
    // Untouched values keep their types.
    assert_eq!(h.metadata.get("t.i16"), Some(&Value::I16(-30000)));
    assert!(leftovers(dir.path(), &["out.gguf"]).is_empty());
}

#[test]
fn alignment_change_relays_out_the_data() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    let mut edits = Edits::new();
    edits.set_metadata("general.alignment", 256u32);
    write(&src, &edits, &out, &WriteOptions::default()).unwrap();
    let got = GgufFile::open(&out).unwrap();
    assert_eq!(got.header().alignment, 256);
    assert_eq!(got.header().data_offset % 256, 0);
    for t in &src.header().tensors {
        assert_eq!(got.tensor_bytes(&t.name).unwrap(), src.tensor_data(t));
        assert_eq!(got.header().tensor(&t.name).unwrap().offset % 256, 0);
    }
}

/// Whether an error is the expected one.
type Expect = fn(&Error) -> bool;

#[test]
fn invalid_edits_write_nothing() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    let cases: Vec<(Edits, Expect)> = vec![
        (
            {
                let mut e = Edits::new();
                e.replace_tensor("nope", GgmlType::F32, vec![]);
                e
            },
            |e| matches!(e, Error::NoSuchTensor { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                e.replace_tensor("blk.0.attn_norm.weight", GgmlType::F32, vec![0; 11]);
                e
            },
            |e| {
                matches!(
                    e,
                    Error::DataSize {
                        expected: 12,
                        got: 11,
                        ..
                    }
                )
            },
        ),
        (
            {
                let mut e = Edits::new();
                let d = f32_bytes(&[0.0; 3]);
                e.replace_tensor("blk.0.attn_norm.weight", GgmlType::F32, d.clone());
                e.replace_tensor("blk.0.attn_norm.weight", GgmlType::F32, d);
                e
            },
            |e| matches!(e, Error::TensorExists { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                e.add_tensor(new_f32("output.weight", &[0.0], None));
                e
            },
            |e| matches!(e, Error::TensorExists { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                e.add_tensor(new_f32("x", &[0.0], Some("missing")));
                e
            },
            |e| matches!(e, Error::NoSuchTensor { name } if name == "missing"),
        ),
        (
            {
                let mut e = Edits::new();
                e.add_tensor(new_f32("x", &[0.0], Some("y")));
                e.add_tensor(new_f32("y", &[0.0], Some("x")));
                e
            },
            |e| matches!(e, Error::NoSuchTensor { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                let mut t = new_f32("x", &[0.0; 4], None);
                t.data.pop();
                e.add_tensor(t);
                e
            },
            |e| matches!(e, Error::DataSize { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                e.add_tensor(new_f32(&"x".repeat(64), &[0.0], None));
                e
            },
            |e| matches!(e, Error::TensorNameTooLong { .. }),
        ),
        (
            {
                let mut e = Edits::new();
                e.set_metadata("general.alignment", 3u32);
                e
            },
            |e| matches!(e, Error::BadAlignment { value: 3 }),
        ),
    ];
    for (i, (edits, expect)) in cases.into_iter().enumerate() {
        let e = write(&src, &edits, &out, &WriteOptions::default()).unwrap_err();
        assert!(expect(&e), "case {i}: {e}");
        assert!(!e.to_string().contains('\n'));
        assert!(!out.exists(), "case {i}");
        assert!(leftovers(dir.path(), &[]).is_empty(), "case {i}");
    }
}

#[test]
fn never_overwrites_the_input_unless_asked() {
    let (dir, input) = setup();
    let original = fs::read(&input).unwrap();
    let src = GgufFile::open(&input).unwrap();
    let mut edits = Edits::new();
    edits.set_metadata("general.name", "changed");
    let opts = WriteOptions::default();

    let link = dir.path().join("link.gguf");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.path().join("hard.gguf");
    fs::hard_link(&input, &hard).unwrap();
    let dotted = dir.path().join(".").join("in.gguf");
    for out in [&input, &link, &hard, &dotted] {
        let e = write(&src, &edits, out, &opts).unwrap_err();
        assert!(
            matches!(e, Error::OverwriteInput { .. }),
            "{}: {e}",
            out.display()
        );
    }
    assert_eq!(fs::read(&input).unwrap(), original);
    assert!(leftovers(dir.path(), &["link.gguf", "hard.gguf"]).is_empty());

    let allow = WriteOptions {
        allow_overwrite_input: true,
        ..Default::default()
    };
    write(&src, &edits, &input, &allow).unwrap();
    drop(src);
    let again = GgufFile::open(&input).unwrap();
    assert_eq!(
        again.header().metadata.get_str("general.name"),
        Some("changed")
    );
    // The hard link still holds the original: the output was renamed in, not written through.
    assert_eq!(fs::read(&hard).unwrap(), original);
}

#[test]
fn output_problems_are_one_line_errors() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let e = write(&src, &Edits::new(), dir.path(), &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, Error::OutputIsDir { .. }), "{e}");
    let missing = dir.path().join("no/such/dir/out.gguf");
    let e = write(&src, &Edits::new(), &missing, &WriteOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot create a file in ") && msg.contains("no/such/dir"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    let full = Error::Io {
        action: "write",
        path: "x.gguf".into(),
        cause: std::io::Error::from(std::io::ErrorKind::StorageFull),
    };
    assert!(full.to_string().contains("free some disk space"), "{full}");
}

#[test]
fn existing_output_is_replaced_atomically() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    fs::write(&out, b"old contents").unwrap();
    // A stale temporary file from an interrupted run never takes the output's name.
    let stale = dir.path().join(".out.gguf.tmp-1-0000000000000000");
    fs::write(&stale, b"stale").unwrap();
    write(&src, &Edits::new(), &out, &WriteOptions::default()).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
    assert_eq!(fs::read(&stale).unwrap(), b"stale");
}

#[test]
fn patch_in_place_changes_only_the_given_tensors() {
    let (dir, input) = setup();
    let before = fs::read(&input).unwrap();
    let h = gguf::Header::parse(&before).unwrap();
    let t = h.tensor("blk.0.attn_norm.weight").unwrap().clone();
    let new = f32_bytes(&[9.0, 8.0, 7.0]);
    patch_in_place(&input, &[(t.name.clone(), new.clone())]).unwrap();
    let after = fs::read(&input).unwrap();
    let start = (h.data_offset + t.offset) as usize;
    assert_eq!(&after[start..start + 12], new.as_slice());
    assert_eq!(after[..start], before[..start]);
    assert_eq!(after[start + 12..], before[start + 12..]);

    for (name, len) in [("blk.0.attn_norm.weight", 8), ("missing", 12)] {
        let e = patch_in_place(&input, &[(name.into(), vec![0; len])]).unwrap_err();
        assert!(
            matches!(e, Error::DataSize { .. } | Error::NoSuchTensor { .. }),
            "{e}"
        );
    }
    // A valid replacement followed by an invalid one: nothing is written.
    let e = patch_in_place(
        &input,
        &[
            (t.name.clone(), vec![0; 12]),
            ("output.weight".into(), vec![0; 3]),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, Error::DataSize { .. }), "{e}");
    assert_eq!(fs::read(&input).unwrap(), after);

    let bad = dir.path().join("bad.gguf");
    fs::write(&bad, b"GGUF\x01\0\0\0").unwrap();
    assert!(patch_in_place(&bad, &[]).is_err());
    assert!(patch_in_place(&dir.path().join("absent.gguf"), &[]).is_err());
}

/// IEEE half bits of small exact values (enough for this test).
fn half_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = ((b >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | mant
}

/// Removing a tensor drops it from the directory and the data; the others keep their bytes,
/// an addition anchored on it takes its place; removing a missing, replaced or already removed
/// tensor is refused.
#[test]
fn remove_tensor_and_put_another_in_its_place() {
    let (dir, input) = setup();
    let src = GgufFile::open(&input).unwrap();
    let out = dir.path().join("out.gguf");
    let mut edits = Edits::new();
    edits
        .remove_tensor("blk.0.attn_norm.weight")
        .add_tensor(new_f32(
            "blk.1.attn_norm.weight",
            &[1.0, 2.0, 3.0],
            Some("blk.0.attn_norm.weight"),
        ));
    write(&src, &edits, &out, &WriteOptions::default()).unwrap();
    let got = GgufFile::open(&out).unwrap();
    let names: Vec<&str> = got
        .header()
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_v.weight",
            "blk.1.attn_norm.weight",
            "output.weight"
        ]
    );
    for kept in ["blk.0.attn_v.weight", "output.weight"] {
        assert_eq!(got.tensor_bytes(kept), src.tensor_bytes(kept));
    }
    assert_eq!(
        got.tensor_bytes("blk.1.attn_norm.weight").unwrap(),
        f32_bytes(&[1.0, 2.0, 3.0])
    );

    let missing = Edits::new().remove_tensor("nope").clone();
    assert!(matches!(
        missing.apply(src.header()),
        Err(Error::NoSuchTensor { .. })
    ));
    let twice = Edits::new()
        .remove_tensor("output.weight")
        .remove_tensor("output.weight")
        .clone();
    assert!(matches!(
        twice.apply(src.header()),
        Err(Error::TensorExists { .. })
    ));
    let bytes = src.tensor_bytes("output.weight").unwrap().to_vec();
    let replaced = Edits::new()
        .replace_tensor("output.weight", GgmlType::Q8_0, bytes)
        .remove_tensor("output.weight")
        .clone();
    assert!(matches!(
        replaced.apply(src.header()),
        Err(Error::TensorExists { .. })
    ));
}

#[test]
fn write_new_makes_a_file_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cv.gguf");
    let mut meta = gguf::Metadata::new();
    meta.set("general.architecture", "controlvector");
    meta.set("controlvector.layer_count", 2u32);
    let a = [1.0f32, -2.0, 3.5];
    let b = [0.25f32; 5];
    let r = gguf::write_new(
        meta,
        vec![
            new_f32("direction.1", &a, None),
            new_f32("direction.2", &b, None),
        ],
        &out,
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(r.tensors, 2);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.header().architecture(), Some("controlvector"));
    assert_eq!(
        f.header().metadata.get_u64("controlvector.layer_count"),
        Some(2)
    );
    assert_eq!(f.tensor_bytes("direction.1").unwrap(), f32_bytes(&a));
    assert_eq!(f.tensor_bytes("direction.2").unwrap(), f32_bytes(&b));
    assert_eq!(f.len(), r.bytes);
    assert_eq!(leftovers(dir.path(), &["cv.gguf"]), Vec::<String>::new());

    // Data of the wrong length writes nothing.
    let bad = NewTensor {
        dims: vec![4],
        ..new_f32("direction.1", &a, None)
    };
    let out2 = dir.path().join("bad.gguf");
    let e = gguf::write_new(
        gguf::Metadata::new(),
        vec![bad],
        &out2,
        &WriteOptions::default(),
    );
    assert!(matches!(e, Err(Error::DataSize { .. })), "{e:?}");
    assert!(!out2.exists());
}
