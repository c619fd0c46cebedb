#!/usr/bin/env bash
# Benchmarks capture: prefill of 64 calibration conversations (the built-in calibration
# questions rendered through the chat template with a system prompt) with capture of every
# layer (Vcur, ffn_inp, ffn_norm, l_out by default) against the same prefill without capture,
# in one process. Prints tokens/s of each and the ratio (goal: capture/plain <= 1.3).
# See examples/bench_capture.rs for the modes.
# Usage: scripts/bench-capture.sh [MODEL] [--conversations N] [--rounds R] [--kinds a,b | --all-kinds]
#   BENCH_THREADS="1 2" runs once per thread count (default: 1). llama.cpp's threads busy-wait:
#   use more than one thread only on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release -q --example bench_capture
echo "load: $(uptime)"
for t in ${BENCH_THREADS:-1}; do
    echo "== GGUF_SLEEP_THREADS=$t"
    GGUF_SLEEP_THREADS=$t target/release/examples/bench_capture "$@"
done
