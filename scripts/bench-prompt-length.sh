#!/usr/bin/env bash
# The default `patch` of SmolLM2 with a one-line system prompt and with a ~900-token one
# (data/prompts/long-support.txt), 64 calibration questions, first run (reply cache off): wall
# time and phases of each, and the ratio long / short. One line of JSON per binary.
# Usage: scripts/bench-prompt-length.sh [NAME=BINARY ...]   (default: this tree's release build)
#   e.g. scripts/bench-prompt-length.sh before=/tmp/gguf-sleep-old after=target/release/gguf-sleep
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
MODEL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$MODEL" ] || { echo "bench-prompt-length: $MODEL not found: run scripts/fetch-models.sh" >&2; exit 1; }
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
    cargo build --release -q --bin gguf-sleep
    BINS=(this=target/release/gguf-sleep)
fi
WORK=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf "$WORK"' EXIT
SHORT="You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."
for nb in "${BINS[@]}"; do
    name=${nb%%=*}; bin=${nb#*=}
    # 64 questions on both sides: none built from the prompt (a long prompt would add more)
    pq=(); "$bin" patch --help | grep -q -- --prompt-questions && pq=(--prompt-questions 0)
    for kind in short long; do
        if [ $kind = short ]; then p=(--prompt "$SHORT"); else p=(--prompt-file data/prompts/long-support.txt); fi
        start=$(date +%s.%N)
        GGUF_SLEEP_REPLY_CACHE=off "$bin" patch "$MODEL" "${p[@]}" -o "$WORK/out.gguf" \
            --calib-size 64 "${pq[@]}" --json >"$WORK/$kind.json" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
        echo "$start $(date +%s.%N)" >"$WORK/$kind.wall"
        rm -f "$WORK/out.gguf"
    done
    python3 - "$name" "$WORK" <<'PY'
import json, sys
name, work = sys.argv[1:3]
out = {"build": name}
for kind in ("short", "long"):
    r = json.load(open(f"{work}/{kind}.json"))
    t0, t1 = map(float, open(f"{work}/{kind}.wall").read().split())
    out[kind] = {"wall_s": round(t1 - t0, 1),
                 "phases": {k: round(v, 1) for k, v in r["phases"]}, "tokens": r["tokens"]}
out["ratio_long_over_short"] = round(out["long"]["wall_s"] / out["short"]["wall_s"], 3)
print(json.dumps(out))
PY
done
