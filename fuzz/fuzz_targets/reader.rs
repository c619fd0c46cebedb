//! `Header::parse` on arbitrary bytes: never panics, never allocates beyond the input's size,
//! and whatever it accepts re-encodes to exactly the bytes it read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match gguf::Header::parse(data) {
        Ok(h) => {
            let bytes = h.to_bytes();
            let n = h.encoded_len() as usize;
            assert_eq!(
                &bytes[..n],
                &data[..n],
                "re-encoded header differs from the input"
            );
            assert!(h.file_len() <= (data.len() as u64).saturating_add(h.alignment));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
    }
});
