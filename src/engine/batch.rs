//! A batch of tokens to decode: positions, sequence ids and which rows produce logits.

use llama_cpp_sys_2 as sys;

/// A `llama_batch` with a fixed capacity, freed on drop.
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Batch {
    /// A batch with room for `capacity` tokens, each in one sequence.
    pub fn new(capacity: usize) -> Batch {
        let capacity = capacity.max(1);
        // SAFETY: allocates arrays of `capacity` entries (token ids, 1 seq id each).
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch { raw, capacity }
    }

    /// Number of tokens in the batch.
    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Whether the batch holds no token.
    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len()
    }

    /// Empty the batch (keeps its capacity).
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Append `token` at position `pos` of sequence `seq`; `logits` asks for its output row.
    /// Returns the row index (for [`super::Context::logits`]). Panics only if over capacity,
    /// which callers size against.
    pub fn push(&mut self, token: i32, pos: i32, seq: i32, logits: bool) -> usize {
        let i = self.len();
        assert!(
            i < self.capacity,
            "batch capacity {} exceeded",
            self.capacity
        );
        // SAFETY: i < capacity; the arrays were allocated with `capacity` entries, seq_id[i]
        // with room for one id.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = logits as i8;
        }
        self.raw.n_tokens += 1;
        i
    }

    pub(crate) fn raw(&self) -> sys::llama_batch {
        self.raw
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.raw) };
    }
}
