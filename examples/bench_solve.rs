//! Benchmark: the ridge solve of one `down` layer of SmolLM2's size (1536 MLP features plus the
//! intercept, 576 targets, 5000 calibration rows of synthetic data), as `patch` runs it: the
//! rows accumulated into the normal equations, then λ chosen on the validation split and the
//! winner refitted, three times (see `scripts/bench-solve.sh`).
//!
//! Usage: `bench_solve [--retain] [--at-once N] [--dims D,M,N] [--rounds R]`. `--retain` keeps
//! freed memory in the process (what parallel-mode `patch` does); `--at-once N` solves N copies
//! of the problem at once on rayon's threads with single-threaded LAPACK and reports the time
//! per problem; `--dims` sets the features, targets and rows (e.g. `8192,2048,17000` for a
//! Llama-3.2-1B-sized layer); `--rounds` how often the solve is timed (3); `--lambda L` a
//! fixed λ (patch's default is 0.1) instead of the validated search. OpenBLAS's own threads
//! follow `OPENBLAS_NUM_THREADS`.

use gguf_sleep::engine;
use gguf_sleep::patch::ridge::{Lambda, Ridge};
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let retain = args.iter().any(|a| a == "--retain");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let at_once: usize = value("--at-once").and_then(|v| v.parse().ok()).unwrap_or(1);
    if retain {
        engine::retain_freed_memory();
    }
    let dims: Vec<usize> = value("--dims")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1536, 576, 5000]);
    let [d, m, n] = dims[..] else {
        eprintln!("bench_solve: --dims takes three numbers: features,targets,rows");
        std::process::exit(2);
    };
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let lambda = match value("--lambda").map(|v| v.parse::<f64>()) {
        None => Lambda::Auto,
        Some(Ok(l)) => Lambda::Fixed(l),
        Some(Err(_)) => {
            eprintln!("bench_solve: --lambda takes a number (relative to tr(G)/d)");
            std::process::exit(2);
        }
    };
    let mut state = 1u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut problem = Ridge::new(d, m, true);
    let t = Instant::now();
    for i in 0..n {
        // Uneven feature scales and targets that depend on a few features, plus noise.
        let x: Vec<f32> = (0..d)
            .map(|j| next() * if j % 7 == 0 { 3.0 } else { 1.0 })
            .collect();
        let y: Vec<f32> = (0..m)
            .map(|j| 0.3 * x[j % d] + 0.2 * x[(j + 1) % d] + next())
            .collect();
        problem.add(&x, &y, gguf_sleep::text::is_validation(i));
    }
    println!("accumulate {n} rows: {:.3} s", t.elapsed().as_secs_f64());
    for round in 1..=rounds {
        let copies: Vec<Ridge> = (0..at_once).map(|_| problem.clone()).collect();
        let t = Instant::now();
        let lambdas: Vec<f64> = if at_once == 1 {
            copies
                .into_iter()
                .map(|mut p| p.solve(lambda).expect("solve").lambda)
                .collect()
        } else {
            engine::with_single_threaded_lapack(|| {
                copies
                    .into_par_iter()
                    .map(|mut p| p.solve(lambda).expect("solve").lambda)
                    .collect()
            })
        };
        println!(
            "round {round}: {:.3} s per problem ({at_once} at once), λ {:?}",
            t.elapsed().as_secs_f64() / at_once as f64,
            lambdas[0]
        );
    }
}
