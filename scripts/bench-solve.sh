#!/usr/bin/env bash
# Times the ridge solve of one SmolLM2-sized `down` layer (synthetic data) in the ways `patch`
# can run it: OpenBLAS on 2 threads or 1, freed memory returned to the system or kept, one
# problem at a time or two at once (parallel mode's default); then output-aware rounding of one
# Llama-3.2-1B-sized Q4_K ffn_down (synthetic weights and activations).
# Usage: scripts/bench-solve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --example bench_solve --example bench_round
B=target/release/examples/bench_solve
echo "== OpenBLAS threads: default"; $B
echo "== OPENBLAS_NUM_THREADS=1"; OPENBLAS_NUM_THREADS=1 $B
echo "== --retain"; $B --retain
echo "== --retain --at-once 2 (parallel-mode patch)"; $B --retain --at-once 2
echo "== output-aware rounding, 2048 x 8192 Q4_K with a bias"; target/release/examples/bench_round --bias
