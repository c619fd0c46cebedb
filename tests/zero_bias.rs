//! Zero strength is the identity: adding zero-valued F32 `blk.N.attn_v.bias` tensors to every
//! layer of SmolLM2 gives a file llama.cpp loads and whose greedy generation is token-identical
//! to the original's.

mod util;

use std::path::Path;

use gguf::{Edits, GgmlType, GgufFile, Header, NewTensor, WriteOptions};
use gguf_sleep::engine::{Batch, Context, ContextOptions, Model};
use gguf_sleep::generate::{generate, GenOptions};
use gguf_sleep::text::chat::ChatFormat;
use gguf_sleep::text::convo::prompt_tokens;

const PROMPTS: [&str; 3] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in one sentence why the sky is blue.",
];

/// One zero F32 value bias `[head_dim·n_head_kv]` per layer, placed after its `attn_v.weight`.
fn zero_value_biases(h: &Header) -> Vec<NewTensor> {
    let n_layers = h.arch_u64("block_count").unwrap();
    let n_head = h.arch_u64("attention.head_count").unwrap();
    let n_head_kv = h.arch_u64("attention.head_count_kv").unwrap_or(n_head);
    let head_dim = h
        .arch_u64("attention.value_length")
        .unwrap_or_else(|| h.arch_u64("embedding_length").unwrap() / n_head);
    let n = head_dim * n_head_kv;
    (0..n_layers)
        .map(|i| {
            let weight = format!("blk.{i}.attn_v.weight");
            assert_eq!(h.tensor(&weight).unwrap().dims[1], n, "{weight}");
            NewTensor {
                name: format!("blk.{i}.attn_v.bias"),
                dims: vec![n],
                ggml_type: GgmlType::F32,
                data: vec![0; n as usize * 4],
                after: Some(weight),
            }
        })
        .collect()
}

fn greedy(path: &Path) -> (Vec<Vec<i32>>, Vec<f32>) {
    let model = Model::load(path).unwrap();
    let fmt = ChatFormat::for_model(&model).unwrap();
    let prompts: Vec<Vec<i32>> = PROMPTS
        .iter()
        .map(|u| prompt_tokens(&model, &fmt, None, u).unwrap())
        .collect();
    let opts = GenOptions {
        max_tokens: 24,
        ..Default::default()
    };
    let replies = generate(&model, &fmt, &prompts, &opts, || {}).unwrap();

    // The next-token logits after the first prompt, for a bitwise comparison as well.
    let mut ctx = Context::new(&model, &ContextOptions::default()).unwrap();
    let mut batch = Batch::new(prompts[0].len());
    for (i, &t) in prompts[0].iter().enumerate() {
        batch.push(t, i as i32, 0, i + 1 == prompts[0].len());
    }
    ctx.decode(&batch).unwrap();
    let logits = ctx.logits(prompts[0].len() - 1).unwrap().to_vec();
    (replies, logits)
}

#[test]
fn zero_value_bias_is_the_identity() {
    let input = util::smollm2();
    let src = GgufFile::open(&input).unwrap();
    let h = src.header();
    let biases = zero_value_biases(h);
    assert_eq!(biases.len(), 30, "SmolLM2-135M has 30 layers");
    let mut edits = Edits::new();
    for b in &biases {
        edits.add_tensor(b.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zero-bias.gguf");
    let report = gguf::write(&src, &edits, &out, &WriteOptions::default()).unwrap();
    assert_eq!(report.added, 30);

    // The new file really holds the 30 extra tensors.
    let got = GgufFile::open(&out).unwrap();
    assert_eq!(got.header().tensors.len(), h.tensors.len() + 30);
    for b in &biases {
        let t = got.header().tensor(&b.name).unwrap();
        assert_eq!((t.ggml_type, &t.dims), (GgmlType::F32, &b.dims));
        assert!(got.tensor_data(t).iter().all(|&x| x == 0));
    }
    drop(got);

    let (base, base_logits) = greedy(&input);
    let (biased, biased_logits) = greedy(&out);
    for ((p, a), b) in PROMPTS.iter().zip(&base).zip(&biased) {
        assert!(a.len() >= 4, "{p}: reply of {} tokens", a.len());
        assert_eq!(a, b, "{p}: greedy tokens differ");
    }
    // Adding 0.0 is exact in floating point: the logits are bitwise equal.
    assert!(
        base_logits
            .iter()
            .zip(&biased_logits)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "logits differ"
    );

    // Control: llama.cpp really applies these tensors; a non-zero bias changes the logits.
    let mut edits = Edits::new();
    for b in &biases {
        let n = b.dims[0] as usize;
        edits.add_tensor(NewTensor {
            data: gguf::testkit::f32_bytes(&vec![0.5; n]),
            ..b.clone()
        });
    }
    let nonzero = dir.path().join("nonzero-bias.gguf");
    gguf::write(&src, &edits, &nonzero, &WriteOptions::default()).unwrap();
    let (_, shifted_logits) = greedy(&nonzero);
    let diff = base_logits
        .iter()
        .zip(&shifted_logits)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        diff > 1e-3,
        "a 0.5 value bias left the logits unchanged ({diff})"
    );
}
