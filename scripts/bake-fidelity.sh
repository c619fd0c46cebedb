#!/usr/bin/env bash
# Bake a model and measure it with `eval`: the merged (requantized) model, the same training
# as a LoRA adapter applied by llama.cpp, and the merged model prompted again. One JSON line per
# run (bake arguments, wall time, peak RSS, the bake curve and the eval reports: merged,
# adapter (--init none only, else null), re-prompted),
# appended to $FIDELITY_LOG (default docs/fidelity.jsonl).
# Usage: scripts/bake-fidelity.sh MODEL PROMPT [bake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; PROMPT=$2; shift 2
BIN=${GGUF_SLEEP_BIN:-target/release/gguf-sleep}
LOG=${FIDELITY_LOG:-docs/fidelity.jsonl}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
# A warm-started bake (the default for merged output) trains on top of the patched weights and
# has no adapter of its own; with --init none the adapter is saved and measured too.
SAVE=()
[[ " $* " == *" --init none "* ]] && SAVE=(--save-adapter "$DIR/adapter.gguf")
/usr/bin/time -f "%M %e" -o "$DIR/time" "$BIN" bake "$MODEL" --prompt "$PROMPT" -o "$DIR/baked.gguf" \
    "${SAVE[@]}" --json "$@" >"$DIR/bake.json" 2>"$DIR/err" \
    || { tail -3 "$DIR/err" >&2; exit 1; }
ev() { "$BIN" eval --base "$MODEL" --prompt "$PROMPT" --json "$@" 2>/dev/null; }
ev --candidate "$DIR/baked.gguf" >"$DIR/merged.json"
echo null >"$DIR/lora.json"
[[ ${#SAVE[@]} -gt 0 ]] && ev --candidate "$MODEL" --lora "$DIR/adapter.gguf" >"$DIR/lora.json"
ev --candidate "$DIR/baked.gguf" --reprompt --no-locality >"$DIR/reprompt.json"
python3 - "$MODEL" "$*" "$DIR" <<'PY' | tee -a "$LOG"
import json, sys
model, args, d = sys.argv[1], sys.argv[2], sys.argv[3]
b = json.load(open(f"{d}/bake.json"))
rss_kib, wall = open(f"{d}/time").read().split()[-2:]
def e(name):
    r = json.load(open(f"{d}/{name}.json"))
    if r is None:
        return None
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
print(json.dumps({"model": model.rsplit("/", 1)[-1], "command": "bake", "args": args,
    "wall_s": float(wall), "peak_rss_mib": round(int(rss_kib) / 1024),
    "merged": e("merged"), "lora": e("lora"), "reprompt": e("reprompt"),
    "curve": [(p["step"], round(p["val_recovery"], 3)) for p in b["curve"]],
    "steps_to_0_9": b["steps_to_0_9"], "tail_mass": round(b["mean_tail_mass"], 4),
    "train_trajectories": b["train_trajectories"], "phases": b["phases"]}))
PY
