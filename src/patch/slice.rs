//! One layer of a model cut out into a file of its own.
//!
//! Sequential fitting needs layer l's MLP activations on inputs that already went through the
//! patched layers before it. Running the whole model up to layer l for every layer costs
//! `L²/2` layer passes; instead the residual stream entering layer l is kept, updated in
//! closed form after each layer's edit, and fed as input embeddings to a two-layer model made
//! of layer l (the second copy is never computed: capture stops after the first). Everything
//! else about the layer stays as in the full model: its tensors byte for byte, its metadata,
//! the per-layer entries of arrays, and (gemma3) whether it attends through the sliding window.
//! The stream entering the first block is the tokens' embeddings ([`token_embeddings`]).

use anyhow::{Context as _, Result};
use std::path::Path;

use gguf::{Array, Edits, GgufFile, NewTensor, Value, ValueType};

use crate::arch::Family;
use crate::capture::Matrix;

/// Write a model whose layers 0 and 1 are both layer `l` of `src` to `out`, with `edits`'
/// replacements and additions of layer l's tensors applied (its other edits are ignored).
pub fn write_layer(src: &GgufFile, l: usize, layer_edits: &Edits, out: &Path) -> Result<()> {
    let h = src.header();
    let arch = h
        .architecture()
        .context("the model has no general.architecture")?
        .to_string();
    let count_key = format!("{arch}.block_count");
    let count = h
        .metadata
        .get(&count_key)
        .with_context(|| format!("the model has no {count_key}"))?;
    let n_layer = count.as_u64().context("block_count is not an integer")? as usize;
    anyhow::ensure!(
        l < n_layer,
        "layer {l} is past the model's {n_layer} layers"
    );

    let mut edits = Edits::new();
    edits.set_metadata(count_key.clone(), same_int_type(count, 2));
    // Per-layer arrays keep layer l's entry for both layers.
    for (key, v) in h.metadata.iter() {
        if let (true, Value::Array(a)) = (key.starts_with(&format!("{arch}.")), v) {
            if a.len() == n_layer {
                let item = a.items[l].clone();
                edits.set_metadata(key, Array::new(a.elem_type, vec![item.clone(), item]));
            }
        }
    }
    let window_key = format!("{arch}.attention.sliding_window");
    if Family::of(&arch)?.sliding_window && h.metadata.contains_key(&window_key) {
        let pattern_key = &format!("{arch}.attention.sliding_window_pattern");
        // llama.cpp's default for gemma3: every sixth layer attends globally.
        let swa = match h.metadata.get(pattern_key) {
            Some(Value::Array(a)) => a.items.get(l).and_then(|v| match v {
                Value::Bool(b) => Some(*b),
                v => v.as_u64().map(|n| n != 0),
            }),
            Some(v) => v.as_u64().map(|n| n == 0 || l as u64 % n < n - 1),
            None => Some(l % 6 < 5),
        }
        .unwrap_or(true);
        // Layer 0 keeps layer l's kind; the copy (never computed) slides, since llama.cpp wants
        // at least one sliding-window layer in a model that has a window.
        edits.set_metadata(
            pattern_key,
            Array::new(ValueType::Bool, vec![Value::Bool(swa), Value::Bool(true)]),
        );
    }
    let prefix = format!("blk.{l}.");
    let mut copy_twice = |name: &str, dims: &[u64], ggml_type, data: &[u8]| {
        let rest = &name[prefix.len()..];
        for copy in 0..2 {
            edits.add_tensor(NewTensor {
                name: format!("blk.{copy}.{rest}"),
                dims: dims.to_vec(),
                ggml_type,
                data: data.to_vec(),
                after: None,
            });
        }
    };
    let mut removed = Vec::new();
    for t in &h.tensors {
        if !t.name.starts_with("blk.") {
            continue;
        }
        removed.push(t.name.clone());
        if t.name.starts_with(&prefix) {
            match layer_edits.replacements().iter().find(|r| r.name == t.name) {
                Some(r) => copy_twice(&t.name, &t.dims, r.ggml_type, &r.data),
                None => copy_twice(&t.name, &t.dims, t.ggml_type, src.tensor_data(t)),
            }
        }
    }
    for a in layer_edits.additions() {
        if a.name.starts_with(&prefix) {
            copy_twice(&a.name, &a.dims, a.ggml_type, &a.data);
        }
    }
    for name in removed {
        edits.remove_tensor(name);
    }
    gguf::write(src, &edits, out, &crate::store::output::scratch_options())
        .with_context(|| format!("cannot write layer {l} to {}", out.display()))?;
    Ok(())
}

/// `n` as the integer type of `v`.
fn same_int_type(v: &Value, n: u64) -> Value {
    match v {
        Value::U8(_) => Value::U8(n as u8),
        Value::I8(_) => Value::I8(n as i8),
        Value::U16(_) => Value::U16(n as u16),
        Value::I16(_) => Value::I16(n as i16),
        Value::I32(_) => Value::I32(n as i32),
        Value::U64(_) => Value::U64(n),
        Value::I64(_) => Value::I64(n as i64),
        _ => Value::U32(n as u32),
    }
}

/// The residual stream entering block 0 for `tokens`, as llama.cpp's graph forms it: each
/// token's row of `token_embd.weight` dequantized by ggml's codec, times `scale` (the graph's
/// token-embedding scale, [`super::facts::Arch::embed_scale`]).
pub fn token_embeddings(src: &GgufFile, tokens: &[i32], scale: f32) -> Result<Matrix> {
    let info = src
        .header()
        .tensor("token_embd.weight")
        .context("the model has no token_embd.weight")?;
    let (ne0, n_vocab) = match info.dims[..] {
        [a, b] => (a as usize, b as usize),
        _ => anyhow::bail!("token_embd.weight is not a matrix"),
    };
    let ty = info.ggml_type;
    let row_bytes = ty
        .row_bytes(ne0 as u64)
        .context("token_embd.weight rows do not fill whole blocks")? as usize;
    let data = src.tensor_data(info);
    let mut out = Vec::with_capacity(tokens.len() * ne0);
    for &t in tokens {
        let t = usize::try_from(t)
            .ok()
            .filter(|&t| t < n_vocab)
            .with_context(|| format!("token {t} is outside the vocabulary of {n_vocab}"))?;
        let row = data
            .get(t * row_bytes..(t + 1) * row_bytes)
            .context("token_embd.weight is shorter than its shape")?;
        let v = crate::engine::dequantize(ty, row, ne0 as u64)?;
        out.extend(v.into_iter().map(|x| x * scale));
    }
    Ok(Matrix {
        rows: tokens.len(),
        cols: ne0,
        data: out,
    })
}
