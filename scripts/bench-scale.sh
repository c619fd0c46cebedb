#!/usr/bin/env bash
# The default `patch` at real sizes, on random-weight GGUFs (examples/make_model; weight values
# do not change the cost), Q4_K_M by llama.cpp's llama_model_quantize, first run (reply cache
# off): wall time by phase, the prefill bound (--measure-prefill), peak RSS, peak scratch disk
# beside the output. One line of JSON per model; wall_less_replies_over_prefill leaves out the
# replies and the prefill measurement itself.
# Usage: scripts/bench-scale.sh [CASE...]   CASE: qwen3-0.6b, llama3.2-1b, llama3-8b-1layer,
#   llama3.2-1b-2layer (default: the first three; llama3-8b-1layer is one layer of an 8B-sized
#   model, llama3.2-1b-2layer two layers of a 1B-sized one, for quick comparisons of builds)
#   BENCH_BINS="old=/tmp/a new=/tmp/b" times each binary on each case's file (default: this tree's).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
TOK=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$TOK" ] || { echo "bench-scale: $TOK not found: run scripts/fetch-models.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-scale: /usr/bin/time not found: apt-get install time" >&2; exit 1; }
cargo build --release -q --bin gguf-sleep --example make_model
BINS=(${BENCH_BINS:-this=target/release/gguf-sleep})
WORK=${BENCH_DIR:-$(mktemp -d -p "${TMPDIR:-/tmp}")}
trap 'rm -rf "$WORK"' EXIT
PROMPT="You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(qwen3-0.6b llama3.2-1b llama3-8b-1layer)
for c in "${CASES[@]}"; do
    case $c in
        llama3-8b-1layer) preset=llama3-8b; layers=1 ;;
        llama3.2-1b-2layer) preset=llama3.2-1b; layers=2 ;;
        *) preset=$c; layers= ;;
    esac
    model=$WORK/$c.gguf
    target/release/examples/make_model "$preset" q4_k_m "$TOK" "$model" $layers 2>/dev/null
    for nb in "${BINS[@]}"; do
        name=${nb%%=*}; bin=${nb#*=}
        out=$WORK/out/$c.gguf
        mkdir -p "$WORK/out"
        # peak scratch disk: the output directory, polled every second
        ( peak=0; while sleep 1; do s=$(du -sb "$WORK/out" | cut -f1); [ "$s" -gt "$peak" ] && peak=$s && echo $peak >"$WORK/disk"; done ) &
        poll=$!
        GGUF_SLEEP_REPLY_CACHE=off /usr/bin/time -f "%M %e" -o "$WORK/time" "$bin" patch "$model" \
            --prompt "$PROMPT" -o "$out" --json --measure-prefill >"$WORK/report.json" 2>"$WORK/err" \
            || { kill $poll; cat "$WORK/err" >&2; exit 1; }
        kill $poll 2>/dev/null || true
        wait $poll 2>/dev/null || true
        python3 - "$c" "$name" "$model" "$WORK/report.json" "$WORK/time" "$WORK/disk" <<'PY'
import json, os, sys
case, build, model, report, tm, disk = sys.argv[1:7]
r = json.load(open(report))
rss_kib, wall = open(tm).read().split()[-2:]
size = os.path.getsize(model)
phases = dict(r["phases"])
# The patch's own work: the wall time less the replies and less the --measure-prefill pass
# itself (it runs inside the same process, outside every phase).
fit = float(wall) - phases.get("replies", 0.0) - r["prefill_s"]
print(json.dumps({
    "case": case, "build": build, "file_bytes": size, "wall_s": float(wall), "phases": r["phases"],
    "prefill_s": r["prefill_s"], "wall_less_replies_over_prefill": round(fit / r["prefill_s"], 2),
    "peak_rss_bytes": int(rss_kib) * 1024, "rss_over_file_gib": round((int(rss_kib) * 1024 - size) / 2**30, 2),
    "peak_scratch_bytes": int(open(disk).read()) if os.path.exists(disk) else 0,
    "questions": r["questions"], "tokens": r["tokens"]}))
PY
        rm -f "$out" "$WORK/disk"
    done
    rm -f "$model"
done
