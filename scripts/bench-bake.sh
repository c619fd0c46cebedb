#!/usr/bin/env bash
# Times one `bake` training step on synthetic trajectories (forward, loss, backward; and a
# forward without adapters), three repetitions, the first one cold.
# Usage: scripts/bench-bake.sh [MODEL] [BATCH] [SEQ] [SCORED]   (defaults: SmolLM2, 8, 110, 60)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
MODEL=${1:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}
shift || true
[ -f "$MODEL" ] || { echo "bench: $MODEL not found: run scripts/fetch-models.sh" >&2; exit 1; }
cargo build --release -q --example bench_bake
target/release/examples/bench_bake "$MODEL" "$@"
