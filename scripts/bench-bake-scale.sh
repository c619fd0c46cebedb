#!/usr/bin/env bash
# `bake` at real sizes, on a random-weight Llama-3.2-1B-sized GGUF (examples/make_model, Q4_K_M
# by llama.cpp's llama_model_quantize; weight values do not change the cost): peak RSS, wall
# time by phase and time per training step, one line of JSON per run.
#   short:   --calib-size 24 --init-calib-size 16 --steps 2
#   default: every default but --steps 2 (the default data, warm start and batch, so the same
#            peak as the default's 32 steps: the adapters and their optimizer state do not grow
#            with steps; quantization-aware training starts at step 1 of 2), its 32-step time
#            projected from the measured step time
# Usage: scripts/bench-bake-scale.sh [RUN...] [-- PRESET]   RUN: short, default (default: both);
#   PRESET: a make_model preset (default llama3.2-1b)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
TOK=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$TOK" ] || { echo "bench-bake-scale: $TOK not found: run scripts/fetch-models.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-bake-scale: /usr/bin/time not found: apt-get install time" >&2; exit 1; }
RUNS=()
PRESET=llama3.2-1b
while [ $# -gt 0 ]; do
    case $1 in
        --) PRESET=${2:?give a preset after --}; shift 2 ;;
        *) RUNS+=("$1"); shift ;;
    esac
done
[ ${#RUNS[@]} -gt 0 ] || RUNS=(short default)
cargo build --release -q --bin gguf-sleep --example make_model
WORK=${BENCH_DIR:-$(mktemp -d -p "${TMPDIR:-/tmp}")}
trap 'rm -rf "$WORK"' EXIT
PROMPT="You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."
model=$WORK/$PRESET.gguf
target/release/examples/make_model "$PRESET" q4_k_m "$TOK" "$model" 2>/dev/null
for run in "${RUNS[@]}"; do
    case $run in
        short) args=(--calib-size 24 --init-calib-size 16 --steps 2) ;;
        default) args=(--steps 2) ;;
        *) echo "bench-bake-scale: unknown run '$run' (short, default)" >&2; exit 1 ;;
    esac
    GGUF_SLEEP_REPLY_CACHE=off /usr/bin/time -f "%M %e" -o "$WORK/time" target/release/gguf-sleep \
        bake "$model" --prompt "$PROMPT" -o "$WORK/out.gguf" --json "${args[@]}" \
        >"$WORK/report.json" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    python3 - "$run" "$PRESET" "$model" "$WORK/report.json" "$WORK/time" "${args[*]}" <<'PY'
import json, os, sys
run, preset, model, report, tm, args = sys.argv[1:7]
r = json.load(open(report))
rss_kib, wall = open(tm).read().split()[-2:]
size = os.path.getsize(model)
phases = dict(r["phases"])
steps = 2
train = phases.get("train", 0.0)
print(json.dumps({
    "run": run, "preset": preset, "args": args, "file_bytes": size, "wall_s": float(wall),
    "phases": r["phases"], "train_s_per_step": round(train / steps, 1),
    "projected_default_train_s": round(train / steps * 32, 0),
    "peak_rss_bytes": int(rss_kib) * 1024, "peak_rss_gib": round(int(rss_kib) / 2**20, 2),
    "train_trajectories": r["train_trajectories"], "train_tokens": r["train_tokens"],
    "params": r["params"]}))
PY
    rm -f "$WORK/out.gguf"
done
