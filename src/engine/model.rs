//! A loaded llama.cpp model (weights mmapped) and its vocabulary.

use anyhow::{bail, Context as _, Result};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;

/// Hyper-parameters of a loaded model, as llama.cpp sees them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// `general.architecture`
    pub arch: String,
    /// number of blocks
    pub n_layer: usize,
    /// residual width
    pub n_embd: usize,
    /// attention heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// vocabulary size (logits per position)
    pub n_vocab: usize,
    /// training context length
    pub n_ctx_train: usize,
}

/// A llama.cpp model, freed on drop. Safe to share between threads (llama.cpp only reads it).
pub struct Model {
    ptr: *mut sys::llama_model,
    vocab: *const sys::llama_vocab,
    info: ModelInfo,
    path: PathBuf,
}

// SAFETY: llama_model is immutable after loading; llama.cpp allows concurrent contexts over one model.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

impl Model {
    /// Load a GGUF model from `path` (mmapped, CPU unless built with a GPU feature).
    pub fn load(path: &Path) -> Result<Model> {
        super::backend::init_backend();
        if !path.is_file() {
            bail!("{}: no such model file", path.display());
        }
        let c = CString::new(path.to_string_lossy().as_bytes())
            .context("model path contains a NUL byte")?;
        // SAFETY: default params are plain data; the path is a valid C string for the call.
        let ptr = unsafe {
            let mut p = sys::llama_model_default_params();
            p.n_gpu_layers = super::backend::gpu_layers();
            sys::llama_model_load_from_file(c.as_ptr(), p)
        };
        if ptr.is_null() {
            bail!(
                "llama.cpp could not load {} (set GGUF_SLEEP_LLAMA_LOG=1 to see why)",
                path.display()
            );
        }
        // SAFETY: ptr is a valid model until llama_model_free in Drop.
        let info = unsafe {
            let mut buf = [0 as std::os::raw::c_char; 128];
            let key = c"general.architecture";
            let n = sys::llama_model_meta_val_str(ptr, key.as_ptr(), buf.as_mut_ptr(), buf.len());
            let arch = if n > 0 {
                CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let vocab = sys::llama_model_get_vocab(ptr);
            ModelInfo {
                arch,
                n_layer: sys::llama_model_n_layer(ptr) as usize,
                n_embd: sys::llama_model_n_embd(ptr) as usize,
                n_head: sys::llama_model_n_head(ptr) as usize,
                n_head_kv: sys::llama_model_n_head_kv(ptr) as usize,
                n_vocab: sys::llama_vocab_n_tokens(vocab) as usize,
                n_ctx_train: sys::llama_model_n_ctx_train(ptr) as usize,
            }
        };
        // SAFETY: ptr is valid.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr) };
        Ok(Model {
            ptr,
            vocab,
            info,
            path: path.to_path_buf(),
        })
    }

    /// The model's hyper-parameters.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Tokens one conversation may use: the context size set by
    /// [`set_ctx_size`](super::set_ctx_size), else the model's training context.
    pub fn ctx_size(&self) -> usize {
        super::backend::ctx_size().unwrap_or(self.info.n_ctx_train)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_model {
        self.ptr
    }

    /// The chat template stored in the file (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: returns a pointer into the model's metadata (valid while the model lives) or NULL.
        let p = unsafe { sys::llama_model_chat_template(self.ptr, std::ptr::null()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// Tokenize `text`. `add_special` adds BOS where the model asks for it; `parse_special`
    /// turns special-token text (e.g. `<|im_start|>`) into those tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let len = i32::try_from(text.len()).context("text too long to tokenize")?;
        let mut out = vec![0i32; text.len() + 8];
        // SAFETY: buffers are valid for the given lengths.
        let mut n = unsafe {
            sys::llama_tokenize(
                self.vocab,
                text.as_ptr().cast(),
                len,
                out.as_mut_ptr(),
                out.len() as i32,
                add_special,
                parse_special,
            )
        };
        if n < 0 {
            if n == i32::MIN {
                bail!("tokenization overflowed");
            }
            out.resize((-n) as usize, 0);
            // SAFETY: as above with the size llama.cpp asked for.
            n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n < 0 {
                bail!("tokenization failed");
            }
        }
        out.truncate(n as usize);
        Ok(out)
    }

    /// The text of each token, as it reads in a reply (special tokens not rendered; bytes
    /// that are not UTF-8 on their own replaced).
    pub fn pieces(&self, tokens: &[i32]) -> Vec<String> {
        tokens
            .iter()
            .map(|&t| String::from_utf8_lossy(&self.token_bytes(t, false)).into_owned())
            .collect()
    }

    /// The text of one token (special tokens rendered when `special`).
    pub fn token_bytes(&self, token: i32, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: buffer valid for its length; the token id is checked by llama.cpp.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
        Vec::new()
    }

    /// Detokenize a sequence of tokens to text (lossy UTF-8), special tokens omitted.
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|&t| self.token_bytes(t, false))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether `token` ends generation (EOS, EOT, `<|im_end|>`, …).
    pub fn is_eog(&self, token: i32) -> bool {
        // SAFETY: pure query.
        unsafe { sys::llama_vocab_is_eog(self.vocab, token) }
    }

    /// The BOS token's text, if the vocabulary has one.
    pub fn bos_text(&self) -> Option<String> {
        // SAFETY: pure query.
        let t = unsafe { sys::llama_vocab_bos(self.vocab) };
        (t >= 0).then(|| String::from_utf8_lossy(&self.token_bytes(t, true)).into_owned())
    }

    /// The EOS token's text, if the vocabulary has one.
    pub fn eos_text(&self) -> Option<String> {
        // SAFETY: pure query.
        let t = unsafe { sys::llama_vocab_eos(self.vocab) };
        (t >= 0).then(|| String::from_utf8_lossy(&self.token_bytes(t, true)).into_owned())
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: ptr came from llama_model_load_from_file and is freed once.
        unsafe { sys::llama_model_free(self.ptr) };
    }
}
