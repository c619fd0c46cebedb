//! A llama.cpp context: KV cache, decoding, logits, and observation of named graph nodes
//! through the graph-evaluation callback (`cb_eval`), the way llama.cpp's imatrix tool does.

use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::raw::c_void;

use super::backend::default_threads;
use super::batch::Batch;
use super::model::Model;
use llama_cpp_sys_2 as sys;

/// How to size a context.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// KV cache size in tokens (all sequences together).
    pub n_ctx: u32,
    /// Most tokens per `decode` call; also the physical batch, so one decode = one graph run.
    pub n_batch: u32,
    /// Most distinct sequences.
    pub n_seq_max: u32,
    /// Install the graph-evaluation callback (needed for [`Context::set_capture`]).
    pub capture: bool,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            n_ctx: 2048,
            n_batch: 2048,
            n_seq_max: 1,
            capture: false,
        }
    }
}

/// One observed graph node: its shape (`ne`, ggml order: ne0 fastest) and values as f32,
/// contiguous in that order. Where several nodes of one graph share a name (e.g. a matmul and
/// its reshape), the last one computed is kept; one decode is one graph run.
#[derive(Debug, Clone)]
pub struct Captured {
    /// ggml shape of the node.
    pub ne: [usize; 4],
    /// values, ne0 fastest.
    pub data: Vec<f32>,
}

#[derive(Default)]
struct CaptureState {
    wanted: HashSet<String>,
    /// stop the graph at the first node of a later layer
    until_layer: Option<usize>,
    stopping: bool,
    got: HashMap<String, Captured>,
    error: Option<String>,
}

/// A llama.cpp context over a [`Model`], freed on drop.
pub struct Context<'m> {
    ptr: *mut sys::llama_context,
    model: &'m Model,
    capture: Option<Box<CaptureState>>,
    n_vocab: usize,
    n_ctx: u32,
    n_batch: u32,
    n_seq_max: u32,
}

impl<'m> Context<'m> {
    /// Create a context. Flash attention is off so attention probabilities can be observed
    /// and numbers match between capturing and plain runs.
    pub fn new(model: &'m Model, opts: &ContextOptions) -> Result<Context<'m>> {
        let mut capture = opts.capture.then(Box::<CaptureState>::default);
        let threads = default_threads();
        // SAFETY: default params are plain data; the callback's user data is a Box owned by the
        // returned Context, which outlives the llama_context (freed first in Drop).
        let ptr = unsafe {
            let mut p = sys::llama_context_default_params();
            p.n_ctx = opts.n_ctx;
            p.n_batch = opts.n_batch;
            p.n_ubatch = opts.n_batch;
            p.n_seq_max = opts.n_seq_max;
            p.n_threads = threads;
            p.n_threads_batch = threads;
            p.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
            p.kv_unified = true;
            p.no_perf = true;
            if let Some(state) = capture.as_mut() {
                p.cb_eval = Some(eval_callback);
                p.cb_eval_user_data = (&mut **state as *mut CaptureState).cast();
            }
            sys::llama_init_from_model(model.raw(), p)
        };
        if ptr.is_null() {
            bail!(
                "llama.cpp could not create a context of {} tokens",
                opts.n_ctx
            );
        }
        Ok(Context {
            ptr,
            model,
            capture,
            n_vocab: model.info().n_vocab,
            n_ctx: opts.n_ctx,
            n_batch: opts.n_batch,
            n_seq_max: opts.n_seq_max.max(1),
        })
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_context {
        self.ptr
    }

    /// The model this context runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// KV cache size in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Most tokens per decode.
    pub fn n_batch(&self) -> u32 {
        self.n_batch
    }

    /// Observe these graph nodes (by full name, e.g. `ffn_inp-7`) in the following decodes.
    /// Panics if the context was made without `capture`.
    pub fn set_capture(&mut self, names: HashSet<String>) {
        let st = self
            .capture
            .as_mut()
            .expect("context created without capture");
        st.wanted = names;
        st.until_layer = None;
        st.got.clear();
        st.error = None;
    }

    /// Like [`Context::set_capture`], and stop computing the graph at the first node of a
    /// layer after `last_layer`, or at the output head: later layers, the output norm and the
    /// logits are skipped (the logits of such a decode are meaningless).
    pub fn set_capture_until(&mut self, names: HashSet<String>, last_layer: usize) {
        self.set_capture(names);
        if let Some(st) = self.capture.as_mut() {
            st.until_layer = Some(last_layer);
        }
    }

    /// Take what was observed since the last call.
    pub fn take_captured(&mut self) -> Result<HashMap<String, Captured>> {
        let st = self
            .capture
            .as_mut()
            .expect("context created without capture");
        if let Some(e) = st.error.take() {
            bail!("capture failed: {e}");
        }
        Ok(std::mem::take(&mut st.got))
    }

    /// Decode a batch (its tokens enter the KV cache; flagged rows produce logits).
    pub fn decode(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.len() > self.n_batch as usize {
            bail!(
                "batch of {} tokens exceeds the context's batch size {}",
                batch.len(),
                self.n_batch
            );
        }
        // SAFETY: ctx valid; batch arrays valid for n_tokens entries.
        let rc = unsafe { sys::llama_decode(self.ptr, batch.raw()) };
        match rc {
            0 => Ok(()),
            1 => bail!(
                "no room in the KV cache ({} tokens): use a shorter prompt or conversation",
                self.n_ctx
            ),
            2 => bail!("decode aborted"),
            _ => bail!("llama.cpp decode failed (code {rc})"),
        }
    }

    /// Decode `tokens` into sequence `seq` at positions `start..`, a batch at a time, keeping
    /// no logits and observing nothing: context that later decodes attend to.
    pub fn prefill(&mut self, tokens: &[i32], start: usize, seq: i32) -> Result<()> {
        if let Some(st) = self.capture.as_mut() {
            st.wanted.clear();
            st.until_layer = None;
            st.stopping = false;
        }
        let n = self.n_batch as usize;
        for (c, chunk) in tokens.chunks(n).enumerate() {
            let mut batch = Batch::new(chunk.len());
            for (i, &t) in chunk.iter().enumerate() {
                batch.push(t, (start + c * n + i) as i32, seq, false);
            }
            self.decode(&batch)?;
        }
        Ok(())
    }

    /// Logits of batch row `i` (which must have been flagged for logits in the last decode).
    pub fn logits(&self, i: usize) -> Result<&[f32]> {
        // SAFETY: llama_get_logits_ith returns NULL for rows without logits, else a pointer to
        // n_vocab floats valid until the next decode (which needs &mut self).
        let p = unsafe { sys::llama_get_logits_ith(self.ptr, i as i32) };
        if p.is_null() {
            bail!("no logits for batch row {i}");
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }

    /// Forget everything in the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: ctx valid.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr), true) };
    }

    /// Remove positions `[p0, p1)` of sequence `seq` from the KV cache (`-1` = open end).
    pub fn remove(&mut self, seq: i32, p0: i32, p1: i32) {
        // SAFETY: ctx valid.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr), seq, p0, p1) };
    }

    /// Let sequence `dst` share sequence `src`'s cached positions `[p0, p1)` (`-1` = open end):
    /// the cells are shared, not computed again.
    pub fn share(&mut self, src: i32, dst: i32, p0: i32, p1: i32) -> Result<()> {
        for s in [src, dst] {
            if s < 0 || s as u32 >= self.n_seq_max {
                bail!(
                    "sequence {s} is outside this context's {} sequences",
                    self.n_seq_max
                );
            }
        }
        // SAFETY: ctx valid; both sequence ids are below n_seq_max (checked above), which
        // llama.cpp asserts.
        unsafe { sys::llama_memory_seq_cp(sys::llama_get_memory(self.ptr), src, dst, p0, p1) };
        Ok(())
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: freed once; the capture Box is dropped after this.
        unsafe { sys::llama_free(self.ptr) };
    }
}

fn node_name(t: &sys::ggml_tensor) -> &str {
    // SAFETY: ggml names are NUL-terminated within their 64-byte buffer.
    unsafe { CStr::from_ptr(t.name.as_ptr()) }
        .to_str()
        .unwrap_or("")
}

unsafe extern "C" fn eval_callback(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    if t.is_null() || user.is_null() {
        return true;
    }
    // SAFETY: `user` is the CaptureState Box installed at context creation; ggml calls this
    // callback synchronously from llama_decode, while the Context is borrowed mutably.
    let (t, st) = unsafe { (&*t, &mut *user.cast::<CaptureState>()) };
    let name = node_name(t);
    let wanted = st.wanted.contains(name);
    // A node of a later layer, or the output head (`result_norm`, `result_output`), which
    // follows every layer.
    let past = st.until_layer.is_some_and(|last| {
        name.starts_with("result_")
            || name
                .rsplit_once('-')
                .and_then(|(_, l)| l.parse::<usize>().ok())
                .is_some_and(|l| l > last)
    });
    if ask {
        if past {
            st.stopping = true;
        }
        return wanted || past;
    }
    if past && st.stopping {
        // Returning false ends the graph computation here.
        st.stopping = false;
        st.until_layer = None;
        return false;
    }
    if wanted {
        match read_tensor(t) {
            Ok(c) => {
                st.got.insert(name.to_string(), c);
            }
            Err(e) => st.error = Some(format!("{name}: {e}")),
        }
    }
    true
}

fn read_tensor(t: &sys::ggml_tensor) -> std::result::Result<Captured, String> {
    let ne = [
        t.ne[0] as usize,
        t.ne[1] as usize,
        t.ne[2] as usize,
        t.ne[3] as usize,
    ];
    let elem = match t.type_ {
        sys::GGML_TYPE_F32 => 4usize,
        sys::GGML_TYPE_F16 => 2usize,
        other => return Err(format!("cannot read ggml type {other}")),
    };
    // SAFETY: t is a computed graph node; ggml_nbytes covers every strided element.
    let nbytes = unsafe { sys::ggml_nbytes(t) };
    let mut raw = vec![0u8; nbytes];
    // SAFETY: raw has nbytes bytes; offset 0 + nbytes is within the tensor.
    unsafe { sys::ggml_backend_tensor_get(t, raw.as_mut_ptr().cast(), 0, nbytes) };
    let n: usize = ne.iter().product();
    let mut data = Vec::with_capacity(n);
    for i3 in 0..ne[3] {
        for i2 in 0..ne[2] {
            for i1 in 0..ne[1] {
                let base = i3 * t.nb[3] + i2 * t.nb[2] + i1 * t.nb[1];
                for i0 in 0..ne[0] {
                    let o = base + i0 * t.nb[0];
                    let b = &raw[o..o + elem];
                    data.push(if elem == 4 {
                        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    } else {
                        half::f16::from_le_bytes([b[0], b[1]]).to_f32()
                    });
                }
            }
        }
    }
    Ok(Captured { ne, data })
}
