//! Seed inputs for the fuzz targets in `fuzz/`. Run through `fuzz/seed.sh`, which sets
//! `GGUF_FUZZ_SEED_DIR`; without it the test only checks that the seeds are what they claim.

use gguf::testkit::{self, SMOLLM2};
use gguf::{Array, Header, Metadata, Value};

/// `m` with every array cut to its first `n` items (keeps real keys, types and values).
fn shorten_arrays(m: &Metadata, n: usize) -> Metadata {
    m.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Array(a) => Value::Array(Array::new(
                    a.elem_type,
                    a.items.iter().take(n).cloned().collect(),
                )),
                v => v.clone(),
            };
            (k.to_owned(), v)
        })
        .collect()
}

fn seeds() -> Vec<(String, Vec<u8>, bool)> {
    let mut seeds = vec![("synthetic".to_owned(), testkit::synthetic(), true)];

    let base = Header::parse(&testkit::synthetic()).unwrap();
    let mut m = base.metadata.clone();
    m.set(gguf::ALIGNMENT_KEY, 64u32);
    let aligned = Header::new(2, m, base.tensors.clone()).unwrap();
    let data: Vec<Vec<u8>> = aligned
        .tensors
        .iter()
        .map(|t| vec![7; t.size as usize])
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    seeds.push((
        "synthetic-v2-align64".into(),
        testkit::build(&aligned, &refs),
        true,
    ));

    let empty = Header::new(3, base.metadata.clone(), vec![]).unwrap();
    seeds.push(("metadata-only".into(), testkit::build(&empty, &[]), true));

    let real = std::fs::read(testkit::model_path(SMOLLM2)).unwrap();
    seeds.push(("smollm2-first-64k".into(), real[..64 << 10].to_vec(), false));

    // Real metadata (arrays shortened) with the real directory but no tensor data.
    let h = Header::parse(&real).unwrap();
    let short = shorten_arrays(&h.metadata, 16);
    let dir_only = Header::new(h.version, short.clone(), h.tensors.clone()).unwrap();
    seeds.push((
        "smollm2-directory-no-data".into(),
        dir_only.to_bytes(),
        false,
    ));

    // Real metadata and the real small tensors (norms) with their real bytes, under 64 KiB.
    let mut picked = Vec::new();
    let mut bytes = 0;
    for t in h.tensors.iter().filter(|t| t.size <= 4096) {
        if bytes + t.size > 48 << 10 {
            break;
        }
        bytes += t.size;
        picked.push(t.clone());
    }
    let small = Header::new(h.version, short, picked).unwrap();
    let data: Vec<&[u8]> = small
        .tensors
        .iter()
        .map(|t| {
            let src = h.tensor(&t.name).unwrap();
            let s = (h.data_offset + src.offset) as usize;
            &real[s..s + src.size as usize]
        })
        .collect();
    seeds.push((
        "smollm2-small-tensors".into(),
        testkit::build(&small, &data),
        true,
    ));
    seeds
}

#[test]
fn fuzz_seeds() {
    let dir = std::env::var_os("GGUF_FUZZ_SEED_DIR");
    for (name, bytes, valid) in seeds() {
        assert!(bytes.len() <= 64 << 10, "{name} is {} bytes", bytes.len());
        assert_eq!(Header::parse(&bytes).is_ok(), valid, "{name}");
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(std::path::Path::new(dir).join(&name), &bytes).unwrap();
        }
    }
}
