//! A batch of tokens to decode: positions, sequence ids and which rows produce logits.

use llama_cpp_sys_2 as sys;

/// A `llama_batch` with a fixed capacity, freed on drop.
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
    /// values per row of an embeddings batch, 0 for a token batch
    n_embd: usize,
}

impl Batch {
    /// A batch with room for `capacity` tokens, each in one sequence.
    pub fn new(capacity: usize) -> Batch {
        let capacity = capacity.max(1);
        // SAFETY: allocates arrays of `capacity` entries (token ids, 1 seq id each).
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch {
            raw,
            capacity,
            n_embd: 0,
        }
    }

    /// A batch of input embeddings (rows of `n_embd` values fed to the first layer in place of
    /// token embeddings) with room for `capacity` rows, each in one sequence.
    pub fn embeddings(capacity: usize, n_embd: usize) -> Batch {
        let capacity = capacity.max(1);
        let n_embd = n_embd.max(1);
        // SAFETY: allocates `capacity × n_embd` floats for embd (token stays NULL) and the
        // position / sequence / logits arrays of `capacity` entries.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, n_embd as i32, 1) };
        Batch {
            raw,
            capacity,
            n_embd,
        }
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
    /// Returns the row index (for [`super::context::Context::logits`]). Panics only if over capacity,
    /// which callers size against.
    pub fn push(&mut self, token: i32, pos: i32, seq: i32, logits: bool) -> usize {
        assert!(self.n_embd == 0, "token pushed to an embeddings batch");
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

    /// Append the input embedding `row` (`n_embd` values) at position `pos` of sequence `seq`.
    /// Panics if over capacity, on a token batch, or if `row` has the wrong length.
    pub fn push_embedding(&mut self, row: &[f32], pos: i32, seq: i32, logits: bool) -> usize {
        let i = self.len();
        assert!(self.n_embd > 0, "embedding pushed to a token batch");
        assert_eq!(row.len(), self.n_embd, "embedding row length");
        assert!(
            i < self.capacity,
            "batch capacity {} exceeded",
            self.capacity
        );
        // SAFETY: i < capacity; embd holds capacity × n_embd floats, the other arrays
        // capacity entries, seq_id[i] room for one id.
        unsafe {
            std::ptr::copy_nonoverlapping(
                row.as_ptr(),
                self.raw.embd.add(i * self.n_embd),
                self.n_embd,
            );
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
