//! Writes a random-weight GGUF of a real architecture and size (the tokenizer copied from a
//! real model), quantized by llama.cpp's `llama_model_quantize`: for measuring time and memory
//! at sizes no test model here has.
//!
//! ```text
//! cargo run --release --example make_model -- PRESET|ARCH:LAYERS:EMBD:FF:HEADS:KV:HEAD_DIM \
//!     TYPE TOKENIZER.gguf OUT.gguf [LAYERS]
//! ```
//! PRESET: qwen3-0.6b, llama3.2-1b, llama3-8b, gemma3-1b; TYPE: f16, q4_0, q8_0, q4_k_m;
//! LAYERS overrides the preset's block count (e.g. 1 for one layer of an 8B-sized model).

use anyhow::{bail, Context as _, Result};
use gguf_sleep::engine::{quantize_model, FileType};
use gguf_sleep::synth::{write_random, Dims};
use std::path::Path;

fn dims(spec: &str) -> Result<Dims> {
    let p = |arch: &str, v: [usize; 6]| Dims::plain(arch, v[0], v[1], v[2], [v[3], v[4], v[5]]);
    Ok(match spec {
        "qwen3-0.6b" => p("qwen3", [28, 1024, 3072, 16, 8, 128]),
        "llama3.2-1b" => p("llama", [16, 2048, 8192, 32, 8, 64]),
        "llama3-8b" => p("llama", [32, 4096, 14336, 32, 8, 128]),
        "gemma3-1b" => p("gemma3", [26, 1152, 6912, 4, 1, 256]),
        s => {
            let f: Vec<&str> = s.split(':').collect();
            if f.len() != 7 {
                bail!("give a preset or ARCH:LAYERS:EMBD:FF:HEADS:KV:HEAD_DIM, not '{s}'");
            }
            let n = |i: usize| f[i].parse::<usize>().context("a dimension is not a number");
            p(f[0], [n(1)?, n(2)?, n(3)?, n(4)?, n(5)?, n(6)?])
        }
    })
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        bail!("usage: make_model PRESET|ARCH:LAYERS:EMBD:FF:HEADS:KV:HEAD_DIM TYPE TOKENIZER OUT [LAYERS]");
    }
    let mut d = dims(&a[0])?;
    if let Some(l) = a.get(4) {
        d.n_layer = l.parse().context("LAYERS is not a number")?;
    }
    let tok = gguf::GgufFile::open(Path::new(&a[2]))?;
    let out = Path::new(&a[3]);
    let ftype = match a[1].as_str() {
        "f16" => None,
        "q4_0" => Some(FileType::Q4_0),
        "q8_0" => Some(FileType::Q8_0),
        "q4_k_m" => Some(FileType::Q4KM),
        t => bail!("TYPE is f16, q4_0, q8_0 or q4_k_m, not {t}"),
    };
    match ftype {
        None => write_random(&d, &tok, out, 1)?,
        Some(t) => {
            let f16 = out.with_extension("f16.gguf");
            write_random(&d, &tok, &f16, 1)?;
            let r = quantize_model(&f16, out, t, false);
            std::fs::remove_file(&f16).ok();
            r?;
        }
    }
    eprintln!("wrote {} ({:?})", out.display(), d);
    Ok(())
}
