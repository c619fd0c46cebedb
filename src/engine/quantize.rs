//! Whole-model quantization by llama.cpp's own `llama_model_quantize`: the type mixes
//! `llama-quantize` makes (Q4_K_M keeps some matrices at Q6_K, and so on).

use anyhow::{bail, Context as _, Result};
use std::ffi::CString;
use std::path::Path;

use llama_cpp_sys_2 as sys;

/// A file type `llama-quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// MOSTLY_Q4_0
    Q4_0,
    /// MOSTLY_Q8_0
    Q8_0,
    /// MOSTLY_Q4_K_M
    Q4KM,
}

impl FileType {
    fn ftype(self) -> sys::llama_ftype {
        match self {
            FileType::Q4_0 => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            FileType::Q8_0 => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
            FileType::Q4KM => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        }
    }
}

/// Quantize the model at `input` to `ftype` into `output` (written under a temporary name
/// beside it, then renamed); `allow_requantize` lets an already quantized model be the input.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    ftype: FileType,
    allow_requantize: bool,
) -> Result<()> {
    super::backend::init_backend();
    if !input.is_file() {
        bail!("{}: no such model file", input.display());
    }
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".gguf-sleep-quantize-")
        .suffix(".gguf")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    let cin = CString::new(input.to_string_lossy().as_bytes()).context("NUL in a path")?;
    let cout = CString::new(tmp.path().to_string_lossy().as_bytes()).context("NUL in a path")?;
    // SAFETY: the default parameters are plain data; both paths are valid C strings for the
    // call, and llama.cpp reads and writes only the files they name.
    let rc = unsafe {
        let mut p = sys::llama_model_quantize_default_params();
        p.ftype = ftype.ftype();
        p.allow_requantize = allow_requantize;
        p.nthread = super::backend::default_threads();
        sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &p)
    };
    if rc != 0 {
        bail!(
            "llama.cpp could not quantize {} (set GGUF_SLEEP_LLAMA_LOG=1 to see why)",
            input.display()
        );
    }
    tmp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}
