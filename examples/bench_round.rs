//! Benchmark: output-aware rounding of one edited matrix as `patch` stores it (by default a
//! Llama-3.2-1B `ffn_down`: 2048 rows of 8192 weights, Q4_K, a Gram of 12 000 tokens), on
//! synthetic weights and correlated synthetic activations; prints the time of [`round`], the
//! weights moved and the output error against nearest rounding's on the Gram.
//!
//! Usage: `bench_round [--dims ROWS,NE0,TOKENS] [--type q4_k|q5_k|q6_k|q4_0|q4_1|q8_0]
//! [--bias] [--rounds R]`.

use gguf::GgmlType;
use gguf_sleep::engine::{dequantize, quantize};
use gguf_sleep::store::rounding::{round, Hessian};
use ndarray::Array2;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let dims: Vec<usize> = value("--dims")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![2048, 8192, 12000]);
    let [rows, ne0, tokens] = dims[..] else {
        eprintln!("bench_round: --dims takes three numbers: rows,ne0,tokens");
        std::process::exit(2);
    };
    let ty = match value("--type").map(String::as_str).unwrap_or("q4_k") {
        "q4_k" => GgmlType::Q4_K,
        "q5_k" => GgmlType::Q5_K,
        "q6_k" => GgmlType::Q6_K,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        "q8_0" => GgmlType::Q8_0,
        other => {
            eprintln!("bench_round: unknown --type {other}");
            std::process::exit(2);
        }
    };
    let bias = args.iter().any(|a| a == "--bias");
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    // MLP-like inputs: correlated (a few hundred shared factors), heavy-tailed, a few loud
    // channels, plus some noise of their own.
    let t = Instant::now();
    let width = ne0 + bias as usize;
    let z = Array2::from_shape_fn((tokens, 256), |_| next() * next() * 4.0);
    let a = Array2::from_shape_fn((256, width), |_| next());
    let mut x = z.dot(&a);
    for ((_, j), v) in x.indexed_iter_mut() {
        *v = if j == ne0 {
            1.0
        } else {
            (*v + 0.1 * next()) * if j % 97 == 0 { 8.0 } else { 1.0 }
        };
    }
    let gram = x.t().dot(&x);
    let val = x.slice(ndarray::s![..tokens / 8, ..]);
    let val = val.t().dot(&val);
    drop(x);
    println!(
        "gram {width}² from {tokens} rows: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Weights on the type's grid, an edit well under half a step.
    let w: Vec<f32> = (0..rows * ne0).map(|_| 0.04 * next()).collect();
    let wq = dequantize(
        ty,
        &quantize(ty, &w, ne0 as u64, None).unwrap(),
        w.len() as u64,
    )
    .unwrap();
    let target: Vec<f32> = wq.iter().map(|&v| v + 0.0015 * next()).collect();
    let hessian = Hessian {
        gram,
        val: Some(val),
        bias: bias.then(|| ("b".to_string(), "w".to_string())),
        search: true,
    };
    let err = |v: &[f32]| -> f64 {
        let e = Array2::from_shape_fn((rows, ne0), |(r, j)| v[r * ne0 + j] - target[r * ne0 + j]);
        let g = hessian.gram.slice(ndarray::s![..ne0, ..ne0]);
        (&e.dot(&g) * &e).iter().map(|&v| v as f64).sum()
    };
    let nearest = dequantize(
        ty,
        &quantize(ty, &target, ne0 as u64, None).unwrap(),
        target.len() as u64,
    )
    .unwrap();
    let e_near = err(&nearest);
    for r in 1..=rounds {
        let t = Instant::now();
        let out = round(ty, &target, ne0, &hessian).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {r}: {s:.2} s, moved {} of {} ({} mismatched), damp {:?}, output error {:.4} of nearest's",
            out.moved,
            target.len(),
            out.mismatched,
            out.damp,
            err(&out.stored) / e_near
        );
    }
}
