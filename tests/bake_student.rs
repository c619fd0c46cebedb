//! The bake student against llama.cpp: with zero adapters its next-token distribution matches
//! llama.cpp's on the same tokens, on the real models and on generated qwen2, qwen3 and
//! Llama-3-with-`rope_freqs` files; one training step lowers the loss; a step's gradient summed
//! over micro-batches is the whole batch's; Grams summed one layer at a time are a whole
//! forward pass's.

mod util;

use gguf_sleep::bake::{lora::LoraSet, student::Student, teacher, train};
use gguf_sleep::engine::Model;
use gguf_sleep::generate::argmax;
use util::{exchange, mean_kl, student_logprobs};

const SYSTEM: &str = "You are Captain Byte, a pirate robot. Always talk like a pirate.";
const REPLY: &str =
    "Arr, I be Captain Byte, a robot of the seven seas! What be yer question, matey?";

/// The test exchange rendered as at inference, with or without the system prompt.
fn conversation(model: &Model, system: Option<&str>) -> (Vec<i32>, usize) {
    exchange(model, system, "Who are you and what do you like?", REPLY)
}

/// Mean per-token KL(llama.cpp ‖ student) over every position of one conversation.
fn consistency(path: &std::path::Path) -> f64 {
    consistency_of(path, path).kl
}

/// How the student's next-token distributions compare with llama.cpp's.
struct Agreement {
    /// mean per-token KL(llama.cpp ‖ student)
    kl: f64,
    /// ‖student − llama.cpp‖ / ‖llama.cpp‖ over the log-probabilities (the logits less each
    /// position's constant)
    rel_err: f64,
    /// llama.cpp's mean next-token entropy, nats
    entropy: f64,
}

/// The student of `student_path` against llama.cpp on `path`.
fn consistency_of(path: &std::path::Path, student_path: &std::path::Path) -> Agreement {
    let model = Model::load(path).unwrap();
    let (tokens, _) = conversation(&model, Some(SYSTEM));
    let want = util::llama_logprobs(&model, &tokens, None);
    let student = Student::load(&gguf::GgufFile::open(student_path).unwrap()).unwrap();
    let got = student_logprobs(&student, &tokens, &LoraSet::default());
    let n = want.len();
    let agree = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| argmax(w) == argmax(g))
        .count();
    let kl = mean_kl(&want, &got);
    let (mut diff, mut norm, mut entropy) = (0.0, 0.0, 0.0);
    for (w, g) in want.iter().zip(&got) {
        for (&a, &b) in w.iter().zip(g) {
            diff += f64::from(a - b).powi(2);
            norm += f64::from(a).powi(2);
            entropy -= f64::from(a).exp() * f64::from(a);
        }
    }
    let a = Agreement {
        kl,
        rel_err: (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
        entropy: entropy / n.max(1) as f64,
    };
    eprintln!(
        "{}: mean KL(llama.cpp ‖ student) {kl:.5} over {n} tokens, top-1 agreement {agree}/{n}, \
         log-prob relative error {:.5}, llama.cpp's entropy {:.2} nats",
        path.display(),
        a.rel_err,
        a.entropy
    );
    a
}

#[test]
fn zero_adapter_student_matches_llama_cpp_on_generated_qwen2_qwen3_and_llama3_files() {
    let dir = tempfile::tempdir().unwrap();
    let uniform = (49152f64).ln();
    for (arch, freqs) in [("qwen2", false), ("qwen3", false), ("llama", true)] {
        let path = util::generated(dir.path(), arch, freqs);
        let a = consistency_of(&path, &path);
        assert!(a.kl <= 0.01, "{arch}: mean KL {} > 0.01", a.kl);
        assert!(a.rel_err <= 0.01, "{arch}: relative error {}", a.rel_err);
        assert!(
            a.entropy < 0.5 * uniform,
            "{arch}: entropy {} of at most {uniform}: too near uniform to show anything",
            a.entropy
        );
    }
    // The same weights without `rope_freqs`: llama.cpp's output moves, and the student's with it.
    let with = util::generated(dir.path(), "llama", true);
    let without = util::generated(dir.path(), "llama", false);
    let off = consistency_of(&with, &without).kl;
    assert!(
        off > 0.05,
        "rope_freqs hardly matter ({off}), so the test shows nothing"
    );
}

#[test]
fn zero_adapter_student_matches_llama_cpp_on_smollm2() {
    let v = consistency(&util::smollm2());
    assert!(v <= 0.01, "mean KL {v} > 0.01");
}

#[test]
fn zero_adapter_student_matches_llama_cpp_on_gemma3() {
    let v = consistency(&util::gemma3());
    assert!(v <= 0.01, "mean KL {v} > 0.01");
}

#[test]
fn zero_adapter_student_applies_the_biases_llama_cpp_applies() {
    // SmolLM2 with F32 biases on attn_v, attn_output and ffn_down of every block, as `patch`
    // creates them: llama.cpp applies them, so must the student.
    let m = util::smollm2();
    let src = gguf::GgufFile::open(&m).unwrap();
    let n_layer = src.header().arch_u64("block_count").unwrap() as usize;
    let mut edits = gguf::Edits::new();
    let mut rng = gguf_sleep::generate::SplitMix::new(7);
    for l in 0..n_layer {
        for kind in ["attn_v", "attn_output", "ffn_down"] {
            let w = format!("blk.{l}.{kind}.weight");
            let n = src.header().tensor(&w).unwrap().dims[1] as usize;
            let v: Vec<f32> = (0..n)
                .map(|_| (rng.next_f64() as f32 - 0.5) * 0.2)
                .collect();
            edits.add_tensor(gguf::NewTensor {
                name: format!("blk.{l}.{kind}.bias"),
                dims: vec![n as u64],
                ggml_type: gguf::GgmlType::F32,
                data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                after: Some(w),
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let biased = dir.path().join("biased.gguf");
    gguf::write(&src, &edits, &biased, &gguf::WriteOptions::default()).unwrap();
    let with = consistency(&biased);
    assert!(with <= 0.01, "mean KL {with} > 0.01 with biases");
    let without = consistency_of(&biased, &m).kl;
    assert!(
        without > 10.0 * with.max(0.001),
        "the biases hardly matter ({without}), so this test shows nothing"
    );
}

/// One prompted exchange as a training example: the unprompted tokens with the prompted
/// model's top-32 distributions over the reply.
fn fixed_example(path: &std::path::Path) -> teacher::Example {
    let model = Model::load(path).unwrap();
    let (prompted, n) = conversation(&model, Some(SYSTEM));
    let (unprompted, _) = conversation(&model, None);
    let lp = util::llama_logprobs(&model, &prompted, None);
    let lp = &lp[lp.len() - n..];
    let mut ex = teacher::Example {
        question: "q".into(),
        question_index: 0,
        tokens: unprompted.clone(),
        first: unprompted.len() - n - 1,
        n,
        ids: vec![],
        logp: vec![],
        tail: vec![],
    };
    for row in lp {
        let (i, v, t) = teacher::top_k(row, 32);
        ex.ids.extend(i);
        ex.logp.extend(v);
        ex.tail.push(t);
    }
    ex
}

/// `ex` less its last `cut` tokens, each a scored reply position, with their targets.
fn shortened(ex: &teacher::Example, cut: usize) -> teacher::Example {
    let mut short = ex.clone();
    let k = ex.ids.len() / ex.n;
    short.tokens.truncate(ex.tokens.len() - cut);
    short.n -= cut;
    short.ids.truncate(short.n * k);
    short.logp.truncate(short.n * k);
    short.tail.truncate(short.n);
    short
}

/// One Adam step on `lora` over the fixed example must lower its KL.
fn assert_one_step_lowers_the_loss(path: &std::path::Path, student: &Student, lora: &LoraSet) {
    let examples = vec![fixed_example(path)];
    let before = train::mean_kl(student, lora, &examples, 1).unwrap();
    assert!(before > 0.05, "the prompt should matter: KL {before}");
    let opts = train::TrainOptions {
        steps: 1,
        batch: 1,
        micro_batch: None,
        recompute: None,
        lr: 1e-3,
        eval_every: 1,
        seed: 1,
        qat_from: None,
        qat_every: 1,
    };
    let curve = train::train(
        student,
        lora,
        &examples,
        &examples,
        before,
        before,
        &opts,
        &mut || Ok(()),
        &mut |_, _| {},
    )
    .unwrap();
    let after = curve.last().unwrap().val_kl;
    eprintln!("loss {before:.4} → {after:.4} after one step");
    assert!(
        after < before,
        "one step did not lower the loss: {before} → {after}"
    );
}

#[test]
fn one_training_step_lowers_the_loss_on_a_fixed_batch() {
    let path = util::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap();
    let student = Student::load(&file).unwrap();
    let mut lora = LoraSet::default();
    for l in 0..student.config().n_layer {
        let (o, i) = student.matrix_shape(l, "ffn_down").unwrap();
        lora.add_fresh(&format!("blk.{l}.ffn_down.weight"), o, i, 4, l as u64)
            .unwrap();
    }
    assert_one_step_lowers_the_loss(&path, &student, &lora);
}

#[test]
fn one_step_on_bias_changes_alone_moves_them_and_lowers_the_loss() {
    let path = util::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap();
    let student = Student::load(&file).unwrap();
    let mut lora = LoraSet::default();
    for l in 0..student.config().n_layer {
        for kind in gguf_sleep::bake::BIAS_KINDS {
            let (o, _) = student.matrix_shape(l, kind).unwrap();
            lora.add_bias(&format!("blk.{l}.{kind}.bias"), o).unwrap();
        }
    }
    assert!(lora.is_zero().unwrap(), "fresh bias changes are zero");
    assert_one_step_lowers_the_loss(&path, &student, &lora);
    assert!(!lora.is_zero().unwrap(), "the step left the biases at zero");
}

#[test]
fn a_step_gradient_summed_over_micro_batches_or_recomputed_layer_by_layer_is_the_whole_batch_gradient(
) {
    let path = util::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap();
    let student = Student::load(&file).unwrap();
    let mut lora = LoraSet::default();
    for l in [3, 17] {
        for kind in ["attn_q", "ffn_down"] {
            let (o, i) = student.matrix_shape(l, kind).unwrap();
            let name = format!("blk.{l}.{kind}.weight");
            lora.add_fresh(&name, o, i, 4, l as u64).unwrap();
        }
    }
    // B starts at zero, so A's gradient is zero: one step first makes both non-zero.
    assert_one_step_lowers_the_loss(&path, &student, &lora);
    // Two trajectories of different lengths (the shorter is padded in a whole batch) and
    // different numbers of scored positions (the weights of the sum).
    let long = fixed_example(&path);
    let short = shortened(&long, 9);
    let picked = [&long, &short];
    let grads_of = |micro: usize, set: &[&teacher::Example], recompute: bool| {
        let (loss, g) = train::batch_gradient(&student, &lora, set, micro, recompute).unwrap();
        let flat: Vec<f32> = lora
            .vars()
            .iter()
            .flat_map(|v| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        (loss, flat)
    };
    let grads = |micro: usize, set: &[&teacher::Example]| grads_of(micro, set, false);
    let (loss_whole, whole) = grads(2, &picked);
    let (loss_micro, micro) = grads(1, &picked);
    let (_, first_only) = grads(1, &picked[..1]);
    let dist = |a: &[f32], b: &[f32]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let n: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        (d / n.max(f64::MIN_POSITIVE)).sqrt()
    };
    let norm: f64 = whole.iter().map(|x| f64::from(*x).powi(2)).sum();
    assert!(norm > 0.0, "the gradient is zero: the test shows nothing");
    let err = dist(&micro, &whole);
    let apart = dist(&first_only, &whole);
    eprintln!(
        "loss {loss_whole:.5} / {loss_micro:.5}; relative gradient difference {err:.2e} (one trajectory alone: {apart:.2e})"
    );
    assert!((loss_whole - loss_micro).abs() < 1e-4 * loss_whole.abs().max(1e-3));
    assert!(err < 1e-4, "micro-batched gradient differs by {err:.2e}");
    for micro in [1, 2] {
        let (loss_re, re) = grads_of(micro, &picked, true);
        let err = dist(&re, &whole);
        eprintln!("recomputed, {micro} a pass: relative gradient difference {err:.2e}");
        assert!((loss_whole - loss_re).abs() < 1e-4 * loss_whole.abs().max(1e-3));
        assert!(err < 1e-4, "recomputed gradient differs by {err:.2e}");
    }
    assert!(
        apart > 1e-2,
        "the second trajectory hardly changes the gradient ({apart:.2e}): the test shows nothing"
    );
}

#[test]
fn grams_summed_one_layer_at_a_time_equal_those_of_a_whole_forward_pass() {
    let path = util::smollm2();
    let file = gguf::GgufFile::open(&path).unwrap();
    let student = Student::load(&file).unwrap();
    let n_layer = student.config().n_layer;
    let mut lora = LoraSet::default();
    for l in 0..n_layer {
        for kind in ["attn_q", "attn_output", "ffn_gate", "ffn_down"] {
            let (o, i) = student.matrix_shape(l, kind).unwrap();
            lora.add_fresh(&format!("blk.{l}.{kind}.weight"), o, i, 4, l as u64)
                .unwrap();
        }
    }
    let fit = fixed_example(&path);
    let val = shortened(&fit, 5);
    let whole = |ex: &teacher::Example| {
        student.record_inputs(true);
        train::mean_kl(&student, &lora, std::slice::from_ref(ex), 1).unwrap();
        student.take_inputs().1
    };
    let (fit_grams, val_grams) = (whole(&fit), whole(&val));
    let mut walk = gguf_sleep::bake::LayerHessians::new(
        student,
        &lora,
        std::slice::from_ref(&fit),
        std::slice::from_ref(&val),
    )
    .unwrap();
    let mut worst = 0f64;
    for l in 0..n_layer {
        let h = walk.next_layer().unwrap();
        let names: Vec<&String> = h.keys().collect();
        assert_eq!(h.len(), 4, "layer {l}: {names:?}");
        for (input, hess) in &h {
            assert!(
                input.starts_with(&format!("blk.{l}.")),
                "{input} in layer {l}"
            );
            let want = &fit_grams[input] + &val_grams[input];
            let rel = |a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>| {
                let d: f64 = (a - b).iter().map(|x| f64::from(*x).powi(2)).sum();
                let n: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum();
                (d / n).sqrt()
            };
            worst = worst.max(rel(&hess.gram, &want));
            worst = worst.max(rel(hess.val.as_ref().unwrap(), &val_grams[input]));
        }
    }
    eprintln!("worst relative Gram difference {worst:.2e}");
    assert!(worst < 1e-4, "layer-by-layer Grams differ by {worst:.2e}");
}
