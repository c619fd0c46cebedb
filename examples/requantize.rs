//! Requantizes a model with llama.cpp's `llama_model_quantize` (as `llama-quantize
//! --allow-requantize` does), e.g. SmolLM2's Q4_1 file to Q4_K_M, the type most people run:
//!
//! ```text
//! cargo run --release --example requantize -- IN.gguf OUT.gguf q4_k_m|q4_0|q8_0
//! ```

use anyhow::{bail, Result};
use gguf_sleep::engine::{quantize_model, FileType};
use std::path::Path;

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, ty] = a.as_slice() else {
        bail!("usage: requantize IN.gguf OUT.gguf q4_k_m|q4_0|q8_0");
    };
    let ftype = match ty.as_str() {
        "q4_k_m" => FileType::Q4KM,
        "q4_0" => FileType::Q4_0,
        "q8_0" => FileType::Q8_0,
        t => bail!("the type is q4_k_m, q4_0 or q8_0, not {t}"),
    };
    quantize_model(Path::new(input), Path::new(output), ftype, true)?;
    eprintln!("wrote {output}");
    Ok(())
}
