//! Process-wide state: llama.cpp's backend and log, the thread counts of llama.cpp and
//! OpenBLAS, and the allocator's thresholds.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Once;

static INIT: Once = Once::new();

/// Initialise llama.cpp once per process and route its log to stderr only when
/// `GGUF_SLEEP_LLAMA_LOG=1` (it is chatty otherwise).
pub(crate) fn init_backend() {
    INIT.call_once(|| {
        // SAFETY: plain initialisation calls with no arguments / a static callback.
        unsafe {
            llama_cpp_sys_2::llama_log_set(Some(log_callback), std::ptr::null_mut());
            llama_cpp_sys_2::llama_backend_init();
        }
    });
}

unsafe extern "C" fn log_callback(
    _level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::os::raw::c_char,
    _user: *mut std::os::raw::c_void,
) {
    if text.is_null() || std::env::var_os("GGUF_SLEEP_LLAMA_LOG").is_none() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let s = unsafe { std::ffi::CStr::from_ptr(text) };
    eprint!("{}", s.to_string_lossy());
}

/// Threads set by [`set_threads`] (0: not set).
static THREADS: AtomicI32 = AtomicI32::new(0);

/// Layers offloaded to a GPU as set by [`set_gpu_layers`] (`i32::MIN`: not set).
static GPU_LAYERS: AtomicI32 = AtomicI32::new(i32::MIN);

/// Context size set by [`set_ctx_size`] (0: not set).
static CTX_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Let one conversation use up to `n` tokens of context from now on (0: back to each model's
/// training context), as llama.cpp's `-c` does.
pub fn set_ctx_size(n: usize) {
    CTX_SIZE.store(n, Ordering::Relaxed);
}

/// The context size [`set_ctx_size`] set, if any.
pub(crate) fn ctx_size() -> Option<usize> {
    Some(CTX_SIZE.load(Ordering::Relaxed)).filter(|&n| n > 0)
}

/// Use `n` threads for llama.cpp compute from now on (0: back to the default).
pub fn set_threads(n: usize) {
    THREADS.store(n.min(i32::MAX as usize) as i32, Ordering::Relaxed);
}

/// Threads to use for llama.cpp compute: as [`set_threads`] said, else `GGUF_SLEEP_THREADS`,
/// else all available cores.
pub fn default_threads() -> i32 {
    match THREADS.load(Ordering::Relaxed) {
        n if n > 0 => n,
        _ => std::env::var("GGUF_SLEEP_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &i32| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32)),
    }
}

/// Offload `n` layers to the GPU in models loaded from now on (negative: all; ignored by a
/// CPU-only build).
pub fn set_gpu_layers(n: i32) {
    GPU_LAYERS.store(n, Ordering::Relaxed);
}

/// Layers to offload: as [`set_gpu_layers`] said, else all in a GPU build and none otherwise.
pub(crate) fn gpu_layers() -> i32 {
    match GPU_LAYERS.load(Ordering::Relaxed) {
        i32::MIN if cfg!(any(feature = "cuda", feature = "metal")) => -1,
        i32::MIN => 0,
        n => n,
    }
}

unsafe extern "C" {
    fn openblas_get_num_threads() -> std::os::raw::c_int;
    fn openblas_set_num_threads(n: std::os::raw::c_int);
}

/// Run `f` with OpenBLAS (ndarray-linalg's LAPACK solves, [`super::blas`]'s products) on one
/// thread per call, so that the caller can run independent calls on several threads at once:
/// on 1.5k-wide factorisations OpenBLAS's own threads gain under a tenth, and between the
/// Gram's products they spin beside llama.cpp's while they wait.
pub fn with_single_threaded_lapack<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: OpenBLAS's documented thread-count getter and setter; any count ≥ 1 is valid.
    let n = unsafe { openblas_get_num_threads() };
    // SAFETY: as above; 1 is a valid count.
    unsafe { openblas_set_num_threads(1) };
    let r = f();
    // SAFETY: as above; the count is at least 1.
    unsafe { openblas_set_num_threads(n.max(1)) };
    r
}

/// Keep freed memory in the process instead of returning it to the system (glibc `mallopt`):
/// training allocates and frees the same large activation buffers every step, and the patch's
/// solves the same large matrices every layer; letting the allocator unmap them makes the
/// kernel zero fresh pages each time (a sixth of a training step, a third of a solve).
pub fn retain_freed_memory() {
    malloc_thresholds(1 << 30, i32::MAX);
}

/// Return freed memory to the system (glibc `mallopt`): blocks of 4 MiB and more are mapped on
/// their own and unmapped when freed, and free space of that size at a heap's top is trimmed.
/// glibc's default raises its mapping threshold to the largest block freed so far (up to 32
/// MiB), after which the sequential patch's per-band buffers stay in the threads' heaps: ~0.18
/// GB of a Llama-3.2-1B-sized layer's peak. A lower threshold (128 KiB) took 0.25 GB off but
/// made SmolLM2's capture a quarter slower (every conversation's buffers freshly mapped and
/// zeroed); 4 MiB costs it ~4%.
pub fn return_freed_memory() {
    malloc_thresholds(4 << 20, 4 << 20);
}

/// Set glibc's mapping and trimming thresholds (bytes); nothing elsewhere.
fn malloc_thresholds(mmap: i32, trim: i32) {
    // SAFETY: mallopt only changes allocator thresholds; any values are valid.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap, trim);
}
