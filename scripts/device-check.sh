#!/usr/bin/env bash
# One short check on a machine with an NVIDIA GPU: build with `--features cuda` (llama.cpp's
# CUDA backend; every layer offloaded unless -ngl says otherwise), then time a default patch,
# a short bake and an eval of SmolLM2, and print one JSON line of wall times and peak RSS.
# The bake's student (candle) runs on the CPU in every build: its quantized frozen matmul and
# fused attention are CPU custom ops; its teacher and the eval run on the GPU.
# Needs: cargo, the CUDA toolkit (nvcc) and SmolLM2 in $GGUF_SLEEP_MODELS (scripts/fetch-models.sh).
# Usage: scripts/device-check.sh            (writes its JSON to stdout and, if set, $OUT/device.json)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
MODEL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
command -v cargo >/dev/null || { echo "device-check: cargo not found: install Rust (rustup)" >&2; exit 1; }
command -v nvcc >/dev/null || { echo "device-check: nvcc not found: install the CUDA toolkit" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "device-check: $MODEL not found: run scripts/fetch-models.sh" >&2; exit 1; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
PROMPT="You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."
t0=$(date +%s.%N)
cargo build --release -q --features cuda --bin gguf-sleep
t1=$(date +%s.%N)
BIN=target/release/gguf-sleep
timed() { # NAME COMMAND...: run, keep stdout as NAME.json and "peak_kib wall_s" as NAME.time
    local name=$1; shift
    GGUF_SLEEP_REPLY_CACHE=off /usr/bin/time -f "%M %e" -o "$DIR/$name.time" "$@" \
        >"$DIR/$name.json" 2>"$DIR/$name.err" || { tail -3 "$DIR/$name.err" >&2; exit 1; }
}
timed patch "$BIN" patch "$MODEL" --prompt "$PROMPT" -o "$DIR/patched.gguf" --json
timed bake "$BIN" bake "$MODEL" --prompt "$PROMPT" -o "$DIR/baked.gguf" --json \
    --calib-size 24 --init-calib-size 16 --steps 8
timed eval "$BIN" eval --base "$MODEL" --prompt "$PROMPT" --candidate "$DIR/patched.gguf" --json
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >"$DIR/gpu" 2>/dev/null || echo unknown >"$DIR/gpu"
python3 - "$DIR" "$t0" "$t1" <<'PY' | tee "${OUT:-$DIR}/device.json"
import json, sys
d, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def run(name):
    kib, wall = open(f"{d}/{name}.time").read().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mib": round(int(kib) / 1024),
            "phases": json.load(open(f"{d}/{name}.json")).get("phases")}
ev = json.load(open(f"{d}/eval.json"))
print(json.dumps({"gpu": open(f"{d}/gpu").read().strip(), "build_s": round(t1 - t0, 1),
    "patch": run("patch"), "bake": run("bake"), "eval": run("eval"),
    "eval_kl_recovery": ev["all"]["recovery"]}))
PY
