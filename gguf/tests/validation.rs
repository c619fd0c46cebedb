//! Every validation error of the reader, on small hand-built files.

use gguf::testkit::{self, layout};
use gguf::{Error, GgmlType, Header, Metadata, TensorInfo, Value, ValueType};

/// Raw little-endian GGUF writer for building malformed files.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn start(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(ValueType::U32.id()).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        v.resize(v.len().div_ceil(32) * 32, 0);
        v.resize(v.len() + n, 0);
        v
    }
}

fn err(bytes: &[u8]) -> Error {
    let e = Header::parse(bytes).expect_err("must be rejected");
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.is_empty(),
        "one-line message: {msg:?}"
    );
    e
}

fn patched(at: u64, bytes: &[u8]) -> Vec<u8> {
    let mut f = testkit::synthetic();
    f[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    f
}

fn synthetic_layout() -> (Header, testkit::Layout) {
    let h = Header::parse(&testkit::synthetic()).unwrap();
    let l = layout(&h);
    (h, l)
}

#[test]
fn synthetic_file_is_valid_and_round_trips() {
    let bytes = testkit::synthetic();
    let h = Header::parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 32);
    let expected = testkit::sample_metadata();
    assert!(h.metadata.keys().eq(expected.keys()), "metadata order");
    for ((k, got), (_, want)) in h.metadata.iter().zip(expected.iter()) {
        if k != "t.f32" {
            assert_eq!(got, want, "{k}");
        }
    }
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(h.file_len(), bytes.len() as u64);
    assert_eq!(&bytes[..h.data_offset as usize], h.to_bytes().as_slice());
    // The NaN payload and the non-UTF-8 string survive parsing.
    assert_eq!(
        h.metadata.get("t.f32").unwrap().as_f32().unwrap().to_bits(),
        0x7fc0_0001
    );
    assert_eq!(h.metadata.get("t.bytes").unwrap().as_str(), None);
    let nested = h.metadata.get("t.nested").unwrap().as_array().unwrap();
    assert_eq!(nested.elem_type, ValueType::Array);
    assert_eq!(
        nested.items[1].as_array().unwrap().elem_type,
        ValueType::I32
    );
    assert_eq!(
        h.metadata
            .get("t.empty")
            .unwrap()
            .as_array()
            .unwrap()
            .elem_type,
        ValueType::F64
    );
}

#[test]
fn magic_and_version() {
    assert!(matches!(err(b""), Error::Truncated { .. }));
    assert!(matches!(err(b"GG"), Error::Truncated { .. }));
    let e = err(b"\x7fELF\x02\x01\x01\x00");
    assert!(matches!(e, Error::BadMagic { found } if &found == b"\x7fELF"));
    assert!(e.to_string().contains("0x7f454c46"), "{e}");
    assert!(matches!(err(b"PK"), Error::BadMagic { .. }));
    for (v, needle) in [
        (0, "version 0"),
        (1, "no longer supported"),
        (4, "version 4"),
        (99, "version 99"),
        (0x0300_0000, "byte-swapped"),
    ] {
        let e = err(&Raw::start(v, 0, 0).0);
        assert!(matches!(e, Error::UnsupportedVersion { version } if version == v));
        assert!(e.to_string().contains(needle), "{e}");
    }
    assert!(Header::parse(&Raw::start(2, 0, 0).0).is_ok());
}

#[test]
fn huge_counts_are_clean_errors() {
    let e = err(&Raw::start(3, 1 << 60, 0).0);
    assert!(matches!(e, Error::CountTooLarge { count, .. } if count == 1 << 60));
    assert!(matches!(
        err(&Raw::start(3, 0, u64::MAX).0),
        Error::CountTooLarge { .. }
    ));
    // An array claiming more items than bytes remain.
    let mut r = Raw::start(3, 0, 1);
    r.str(b"a")
        .u32(ValueType::Array.id())
        .u32(ValueType::U8.id())
        .u64(100)
        .u8(1);
    assert!(matches!(err(&r.0), Error::CountTooLarge { count: 100, .. }));
    let mut r = Raw::start(3, 0, 1);
    r.str(b"a")
        .u32(ValueType::Array.id())
        .u32(ValueType::U8.id())
        .u64(1 << 31);
    r.0.resize(r.0.len() + 64, 0);
    assert!(matches!(err(&r.0), Error::CountTooLarge { .. }));
}

#[test]
fn strings() {
    let mut r = Raw::start(3, 0, 1);
    r.u64(1000).0.extend_from_slice(b"abcdefgh");
    assert!(matches!(
        err(&r.0),
        Error::StringTooLong {
            len: 1000,
            max: 8,
            ..
        }
    ));
    let mut r = Raw::start(3, 0, 1);
    r.str(b"k").u32(ValueType::String.id()).u64(u64::MAX);
    assert!(matches!(err(&r.0), Error::StringTooLong { .. }));
    let mut r = Raw::start(3, 0, 1);
    r.str(b"\xff\xfe").u32(ValueType::U8.id()).u8(0);
    assert!(matches!(err(&r.0), Error::InvalidUtf8 { .. }));
}

#[test]
fn keys_and_values() {
    let mut r = Raw::start(3, 0, 1);
    r.str(b"").u32(ValueType::U8.id()).u8(0).u8(0);
    assert!(matches!(err(&r.0), Error::EmptyKey { index: 0 }));

    let mut r = Raw::start(3, 0, 2);
    r.kv_u32("a", 1).kv_u32("a", 2);
    assert!(matches!(err(&r.0), Error::DuplicateKey { key } if key == "a"));

    let mut r = Raw::start(3, 0, 1);
    r.str(b"k").u32(13).u8(0);
    assert!(matches!(err(&r.0), Error::UnknownValueType { id: 13, .. }));

    let mut r = Raw::start(3, 0, 1);
    r.str(b"k").u32(ValueType::Array.id()).u32(99).u64(0);
    assert!(matches!(err(&r.0), Error::UnknownValueType { id: 99, .. }));

    let mut r = Raw::start(3, 0, 1);
    r.str(b"k").u32(ValueType::Bool.id()).u8(2);
    assert!(matches!(err(&r.0), Error::InvalidBool { byte: 2, .. }));

    let mut r = Raw::start(3, 0, 1);
    r.str(b"k").u32(ValueType::U64.id()).u32(0);
    assert!(matches!(
        err(&r.0),
        Error::Truncated {
            needed: 8,
            available: 4,
            ..
        }
    ));
}

#[test]
fn array_nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut r = Raw::start(3, 0, 1);
        r.str(b"k").u32(ValueType::Array.id());
        for _ in 1..depth {
            r.u32(ValueType::Array.id()).u64(1);
        }
        r.u32(ValueType::U8.id()).u64(1).u8(7);
        r.0
    };
    let ok = Header::parse(&nest(gguf::MAX_ARRAY_DEPTH)).unwrap();
    assert_eq!(ok.to_bytes(), nest(gguf::MAX_ARRAY_DEPTH));
    let e = err(&nest(gguf::MAX_ARRAY_DEPTH + 1));
    assert!(matches!(e, Error::ArrayTooDeep { .. }));
    // Very deep nesting is rejected without recursing into it.
    assert!(matches!(err(&nest(100_000)), Error::ArrayTooDeep { .. }));
}

#[test]
fn alignment() {
    let with = |value: Value| {
        let mut m = Metadata::new();
        m.set("general.alignment", value);
        let t = TensorInfo::new("t", vec![8], GgmlType::F32).unwrap();
        Header::new(3, m, vec![t])
    };
    let h = with(Value::U32(64)).unwrap();
    assert_eq!((h.alignment, h.data_offset % 64), (64, 0));
    let mut file = h.to_bytes();
    file.resize(file.len() + 32, 0);
    assert_eq!(Header::parse(&file).unwrap().alignment, 64);

    assert!(matches!(
        with(Value::U32(0)),
        Err(Error::BadAlignment { value: 0 })
    ));
    assert!(matches!(
        with(Value::U32(48)),
        Err(Error::BadAlignment { value: 48 })
    ));
    assert!(matches!(
        with(Value::U64(32)),
        Err(Error::AlignmentType {
            found: ValueType::U64
        })
    ));

    for (ty, v) in [
        (ValueType::U32, 0u32),
        (ValueType::U32, 24),
        (ValueType::I32, 32),
    ] {
        let mut r = Raw::start(3, 0, 1);
        r.str(b"general.alignment").u32(ty.id()).u32(v);
        let e = err(&r.0);
        assert!(
            matches!(e, Error::BadAlignment { .. } | Error::AlignmentType { .. }),
            "{e}"
        );
    }
}

#[test]
fn tensor_directory() {
    let one = |name: &str, dims: &[u64], ty: u32| {
        let mut r = Raw::start(3, 1, 0);
        r.tensor(name, dims, ty, 0);
        r.data(4096)
    };
    assert!(Header::parse(&one("t", &[32, 2], GgmlType::Q8_0.id())).is_ok());
    assert!(Header::parse(&one("scalar", &[], GgmlType::F32.id())).is_ok());
    assert!(Header::parse(&one(&"n".repeat(63), &[1], 0)).is_ok());
    let e = err(&one(&"n".repeat(64), &[1], 0));
    assert!(matches!(e, Error::TensorNameTooLong { len: 64, .. }));
    assert!(matches!(
        err(&one("t", &[1; 5], 0)),
        Error::TooManyDims { n_dims: 5, .. }
    ));
    assert!(matches!(
        err(&one("t", &[4, 0], 0)),
        Error::ZeroDim { axis: 1, .. }
    ));
    assert!(matches!(
        err(&one("t", &[u64::MAX, 2], 0)),
        Error::ShapeOverflow { .. }
    ));
    assert!(matches!(
        err(&one("t", &[1 << 40, 1 << 40], 0)),
        Error::ShapeOverflow { .. }
    ));
    // Element count fits in i64 but the f64 byte size does not.
    assert!(matches!(
        err(&one("t", &[1 << 31, 1 << 31], GgmlType::F64.id())),
        Error::ShapeOverflow { .. }
    ));
    for id in [4, 31, 36, 43, 99, u32::MAX] {
        let e = err(&one("t", &[32], id));
        assert!(matches!(e, Error::UnknownType { id: got, .. } if got == id));
        assert!(e.to_string().contains(&format!("type id {id}")), "{e}");
    }
    let e = err(&one("t", &[100], GgmlType::Q4_K.id()));
    assert!(matches!(
        e,
        Error::NotBlockMultiple {
            ne0: 100,
            block: 256,
            ..
        }
    ));

    let mut r = Raw::start(3, 2, 0);
    r.tensor("t", &[8], 0, 0).tensor("t", &[8], 0, 32);
    assert!(matches!(err(&r.data(64)), Error::DuplicateTensor { name } if name == "t"));
}

#[test]
fn data_layout() {
    let (h, l) = synthetic_layout();
    let off = |i: usize| l.tensors[i].offset_at;
    let t1 = h.tensors[1].offset;

    let e = err(&patched(off(1), &(t1 + 4).to_le_bytes()));
    assert!(matches!(e, Error::Misaligned { .. }));
    assert!(e.to_string().contains("misaligned"), "{e}");

    let e = err(&patched(off(1), &0u64.to_le_bytes()));
    assert!(matches!(e, Error::Overlap { .. }));
    assert!(e.to_string().contains("overlaps previous tensor"), "{e}");

    let e = err(&patched(off(1), &(t1 + 32).to_le_bytes()));
    assert!(matches!(e, Error::Gap { .. }), "{e}");

    let e = err(&patched(off(2), &(1u64 << 20).to_le_bytes()));
    assert!(matches!(e, Error::PastEnd { .. }));
    assert!(e.to_string().contains("offset past end of file"), "{e}");
    let e = err(&patched(off(2), &(u64::MAX - 31).to_le_bytes()));
    assert!(matches!(e, Error::PastEnd { .. }), "{e}");

    let file = testkit::synthetic();
    let last = h.tensors.last().unwrap();
    let data_end = (h.data_offset + last.offset + last.size) as usize;
    assert!(
        data_end < file.len(),
        "the synthetic file ends with padding"
    );
    // The trailing padding is optional, as in gguf.cpp; the data itself is not.
    assert!(Header::parse(&file[..data_end]).is_ok());
    let e = err(&file[..data_end - 1]);
    assert!(matches!(e, Error::PastEnd { .. }), "{e}");
    let e = err(&file[..l.directory_end as usize + 1]);
    assert!(matches!(e, Error::DataPastEnd { .. }), "{e}");
    // Trailing bytes after the last tensor are allowed, as in gguf.cpp.
    let mut longer = file.clone();
    longer.extend_from_slice(&[1, 2, 3]);
    assert!(Header::parse(&longer).is_ok());
}

#[test]
fn every_prefix_of_a_valid_file_is_rejected() {
    let file = testkit::synthetic();
    let h = Header::parse(&file).unwrap();
    let last = h.tensors.last().unwrap();
    for n in 0..(h.data_offset + last.offset + last.size) as usize {
        let e = Header::parse(&file[..n]).expect_err("prefix accepted");
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn header_new_validates() {
    let t = |name: &str| TensorInfo::new(name, vec![4], GgmlType::F32).unwrap();
    assert!(matches!(
        Header::new(3, Metadata::new(), vec![t("a"), t("a")]),
        Err(Error::DuplicateTensor { .. })
    ));
    assert!(matches!(
        Header::new(1, Metadata::new(), vec![]),
        Err(Error::UnsupportedVersion { version: 1 })
    ));
    let mut m = Metadata::new();
    m.set("", 1u8);
    assert!(matches!(
        Header::new(3, m, vec![]),
        Err(Error::EmptyKey { .. })
    ));
    let mut m = Metadata::new();
    m.set("k", gguf::Array::new(ValueType::U8, vec![Value::U16(1)]));
    assert!(matches!(
        Header::new(3, m, vec![]),
        Err(Error::MixedArray { .. })
    ));
    let h = Header::new(3, Metadata::new(), vec![t("a"), t("b")]).unwrap();
    assert_eq!((h.tensors[0].offset, h.tensors[1].offset), (0, 32));
    assert_eq!(h.data_len(), 64);
}
