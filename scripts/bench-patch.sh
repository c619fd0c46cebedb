#!/usr/bin/env bash
# Benchmarks `gguf-sleep patch` with the default method on 64 calibration questions:
#   wall time per phase (from the patch summary), against the prefill bound: llama.cpp decoding
#   the same calibration tokens with no capture, measured in the same run (goal: capture+solve
#   <= 1.5x that bound in parallel mode);
#   peak RSS (/usr/bin/time) against the model's file size (goal: <= file size + 256 MiB).
# Usage: scripts/bench-patch.sh [MODEL] [extra patch args]
# GGUF_SLEEP_BIN runs that binary instead of building target/release/gguf-sleep.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
MODEL=${1:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}
shift || true
[ -f "$MODEL" ] || { echo "bench: $MODEL not found: run scripts/fetch-models.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time not found: apt-get install time" >&2; exit 1; }
BIN=${GGUF_SLEEP_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -q --bin gguf-sleep
    BIN=target/release/gguf-sleep
fi
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
PROMPT="You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."
/usr/bin/time -f "%M %e" -o "$DIR/time" "$BIN" patch "$MODEL" --prompt "$PROMPT" \
    -o "$DIR/out.gguf" --calib-size 64 --json --measure-prefill "$@" >"$DIR/report.json" 2>"$DIR/err" \
    || { cat "$DIR/err" >&2; exit 1; }
python3 - "$DIR/report.json" "$DIR/time" "$MODEL" "$*" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
rss_kib, wall = open(sys.argv[2]).read().split()[-2:]
size = os.path.getsize(sys.argv[3])
ph = dict(r["phases"])
fit = sum(v for k, v in ph.items() if k != "replies" and k != "write" and k != "requantize")
print(f"model {os.path.basename(sys.argv[3])}  method {r['method']} ({r['mode']})  args '{sys.argv[4]}'")
print(f"threads {os.environ.get('GGUF_SLEEP_THREADS', 'all')}  questions {r['questions']}  aligned tokens {r['tokens']}")
for k, v in r["phases"]:
    print(f"  {k:<22} {v:7.1f} s")
print(f"  prefill bound          {r['prefill_s']:7.1f} s  (plain decode of the same prompted+unprompted tokens)")
print(f"capture+fit / prefill bound = {fit / r['prefill_s']:.2f}  (goal <= 1.5 in parallel mode)")
print(f"wall {float(wall):.1f} s; peak RSS {int(rss_kib)/1024:.0f} MiB; file {size/2**20:.0f} MiB; "
      f"RSS - file = {int(rss_kib)/1024 - size/2**20:.0f} MiB (goal <= 256)")
PY
