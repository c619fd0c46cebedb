//! Whatever `Header::parse` accepts survives a rebuild through `Header::new` and the encoder:
//! the rebuilt file parses to the same header and the same tensor bytes.
#![no_main]

use gguf::{Header, Metadata};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::parse(data) else { return };
    let rebuilt = Header::new(h.version, h.metadata.clone(), h.tensors.clone())
        .expect("a parsed header is valid input for Header::new");
    assert_eq!(
        rebuilt.to_bytes()[..rebuilt.encoded_len() as usize],
        data[..h.encoded_len() as usize]
    );
    let tensor_data: Vec<&[u8]> = h
        .tensors
        .iter()
        .map(|t| {
            let s = (h.data_offset + t.offset) as usize;
            &data[s..s + t.size as usize]
        })
        .collect();
    let file = gguf::testkit::build(&rebuilt, &tensor_data);
    let again = Header::parse(&file).expect("rebuilt file parses");
    assert_eq!(again.to_bytes(), rebuilt.to_bytes());
    for (t, d) in again.tensors.iter().zip(&tensor_data) {
        let s = (again.data_offset + t.offset) as usize;
        assert_eq!(&file[s..s + t.size as usize], *d);
    }
    // Metadata edits keep order: setting an existing key in place changes nothing else.
    let mut m: Metadata = h.metadata.clone();
    let first = h
        .metadata
        .iter()
        .next()
        .map(|(k, v)| (k.to_owned(), v.clone()));
    if let Some((k, v)) = first {
        m.set(k, v);
        assert!(m.keys().eq(h.metadata.keys()));
    }
});
