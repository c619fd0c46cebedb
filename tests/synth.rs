//! Random-weight models of each architecture `patch` supports (`gguf_sleep::synth`), quantized
//! to Q4_K_M by llama.cpp's own `llama_model_quantize`: they load and generate in llama.cpp,
//! and the default patch changes only what its method may edit, into a file that loads again.

mod util;

use gguf_sleep::engine::{quantize_model, FileType};
use gguf_sleep::synth::{write_random, Dims};
use std::collections::BTreeSet;
use std::path::Path;

fn small(arch: &str) -> Dims {
    Dims {
        n_ctx: 2048,
        ..Dims::plain(arch, 2, 256, 512, [4, 2, 64])
    }
}

/// Names of the tensors of `b` that are new or differ from `a`'s.
fn changed(a: &Path, b: &Path) -> BTreeSet<String> {
    let (fa, fb) = (
        gguf::GgufFile::open(a).unwrap(),
        gguf::GgufFile::open(b).unwrap(),
    );
    fb.header()
        .tensors
        .iter()
        .filter(|t| match fa.header().tensor(&t.name) {
            Some(o) => o.ggml_type != t.ggml_type || fa.tensor_data(o) != fb.tensor_data(t),
            None => true,
        })
        .map(|t| t.name.clone())
        .collect()
}

fn generates(model: &Path) {
    let (out, err, ok) = util::run(&[
        "generate",
        model.to_str().unwrap(),
        "--user",
        "Hi",
        "--max-tokens",
        "4",
        "--json",
    ]);
    assert!(ok, "{}: {err}", model.display());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["user"], "Hi");
}

#[test]
fn random_models_of_each_architecture_load_generate_and_patch() {
    let tok = gguf::GgufFile::open(util::smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        let f16 = dir.path().join(format!("{arch}.f16.gguf"));
        let q = dir.path().join(format!("{arch}.gguf"));
        write_random(&small(arch), &tok, &f16, 7).unwrap();
        quantize_model(&f16, &q, FileType::Q4KM, false).unwrap();
        let h = gguf::GgufFile::open(&q).unwrap();
        assert_eq!(h.header().architecture(), Some(arch));
        assert_eq!(h.header().metadata.get_u64("general.file_type"), Some(15));
        let types: BTreeSet<String> = h
            .header()
            .tensors
            .iter()
            .map(|t| format!("{:?}", t.ggml_type))
            .collect();
        assert!(
            types.iter().any(|t| t.contains("Q4_K")),
            "{arch}: {types:?}"
        );
        generates(&q);

        let p = dir.path().join(format!("{arch}.patched.gguf"));
        let (_, err, ok) = util::run(&[
            "patch",
            q.to_str().unwrap(),
            "--prompt",
            "You are Captain Byte, a pirate robot.",
            "-o",
            p.to_str().unwrap(),
            "--calib-size",
            "5",
            "--max-tokens",
            "4",
        ]);
        assert!(ok, "{arch}: {err}");
        let mut want: BTreeSet<String> =
            (0..2).map(|l| format!("blk.{l}.ffn_down.weight")).collect();
        if arch == "llama" {
            want.extend((0..2).map(|l| format!("blk.{l}.ffn_down.bias")));
        }
        assert_eq!(changed(&q, &p), want, "{arch}");
        generates(&p);
    }
}

#[test]
fn a_family_gguf_sleep_does_not_model_is_refused_by_the_generator() {
    let tok = gguf::GgufFile::open(util::smollm2()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = write_random(&small("granite"), &tok, &dir.path().join("g.gguf"), 1).unwrap_err();
    assert!(e.to_string().contains("granite"), "{e}");
}
