#!/usr/bin/env bash
# Patch a model and measure it with `eval`: one JSON line per run (the patch arguments, the patch
# summary's timings and the eval report), appended to $FIDELITY_LOG (default docs/fidelity.jsonl).
# Usage: scripts/fidelity.sh MODEL PROMPT [patch args...]
#   e.g. scripts/fidelity.sh ~/.cache/gguf-sleep/SmolLM2-135M-Instruct.Q4_1.gguf "You are…" --method down
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; PROMPT=$2; shift 2
BIN=${GGUF_SLEEP_BIN:-target/release/gguf-sleep}
LOG=${FIDELITY_LOG:-docs/fidelity.jsonl}
OUT=$(mktemp -d)/patched.gguf
trap 'rm -rf "$(dirname "$OUT")"' EXIT
PATCH=$("$BIN" patch "$MODEL" --prompt "$PROMPT" -o "$OUT" --json "$@" 2>/dev/null)
EVAL=$("$BIN" eval --base "$MODEL" --candidate "$OUT" --prompt "$PROMPT" --json 2>/dev/null)
python3 - "$MODEL" "$*" "$PATCH" "$EVAL" <<'PY' | tee -a "$LOG"
import json, sys
model, args, patch, ev = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
cos = [t["stored_cos"] for t in patch["tensors"] if t["ggml_type"] != "f32" or "bias" not in t["name"]]
print(json.dumps({"model": model.rsplit("/", 1)[-1], "args": args,
    "recovery": round(ev["recovery"], 4), "kl_base": round(ev["kl_base"], 4),
    "kl_candidate": round(ev["kl_candidate"], 4), "top1_base": round(ev["top1_base"], 3),
    "top1_candidate": round(ev["top1_candidate"], 3), "locality_kl": ev["locality_kl"],
    "mean_stored_cos": round(sum(cos) / len(cos), 3) if cos else None,
    **({"mean_output_cos": round(sum(oc) / len(oc), 3), "mean_output_error": round(sum(oe) / len(oe), 3)}
       if (oc := [t["output_cos"] for t in patch["tensors"] if "output_cos" in t]) and
          (oe := [t["output_error"] for t in patch["tensors"] if "output_error" in t]) else {}),
    "val_rel_error": [round(l["val_rel_error"], 3) for l in patch["layers"] if l.get("val_rel_error") is not None][:40],
    "lambda": [l["lambda"] for l in patch["layers"] if l.get("lambda") is not None][:40],
    "phases": patch["phases"]}))
PY
