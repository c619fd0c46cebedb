#!/usr/bin/env bash
# Stacking: patch a model with PROMPT1, patch the result with PROMPT2, and measure both effects
# with `eval`: prompt 1 kept (stacked vs base+PROMPT1), prompt 2 added (stacked vs
# first+PROMPT2), against each single patch. Prints one JSON object. A prompt that is one of the
# persona suite's (../shared/eval/personas.json) is also scored on the suite's probes: base,
# base with the prompt, and the stacked model with no prompt.
# Usage: scripts/stack.sh MODEL PROMPT1 PROMPT2 [patch args...]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; P1=$2; P2=$3; shift 3
BIN=${GGUF_SLEEP_BIN:-target/release/gguf-sleep}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$BIN" patch "$MODEL" --prompt "$P1" -o "$DIR/first.gguf" "$@" >/dev/null 2>&1
"$BIN" patch "$DIR/first.gguf" --prompt "$P2" -o "$DIR/stacked.gguf" "$@" >/dev/null 2>&1
ev() { "$BIN" eval --base "$1" --candidate "$2" --prompt "$3" --no-locality --json 2>/dev/null; }
A=$(ev "$MODEL" "$DIR/first.gguf" "$P1")
B=$(ev "$MODEL" "$DIR/stacked.gguf" "$P1")
C=$(ev "$DIR/first.gguf" "$DIR/stacked.gguf" "$P2")
python3 - "$A" "$B" "$C" "$*" "$BIN" "$MODEL" "$DIR" "$P1" "$P2" <<'PY'
import json, os, subprocess, sys
a, b, c = (json.loads(x) for x in sys.argv[1:4])
args, binary, model, d, p1, p2 = sys.argv[4:10]
r = lambda e: {k: round(e[k], 4) for k in ("recovery", "kl_base", "kl_candidate", "top1_candidate")}
out = {"args": args, "prompt1_first": r(a), "prompt1_stacked": r(b), "prompt2_stacked_over_first": r(c)}
suite = "../shared/eval/personas.json"
cases = json.load(open(suite))["cases"] if os.path.exists(suite) else []

def score(m, case, system):
    q = os.path.join(d, "probes.txt")
    open(q, "w").write("\n".join(case["probes"]) + "\n")
    cmd = [binary, "generate", m, "--user-file", q, "--max-tokens", "48", "--json"]
    if system:
        cmd[3:3] = ["--system", system]
    rep = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    words = case["score"]["contains_any"]
    hits = [any(w in " " + json.loads(l)["reply"].lower() + " " for w in words) for l in rep]
    return round(sum(hits) / len(hits), 3)

for p in (p1, p2):
    for case in cases:
        if case["system"] == p and "contains_any" in case["score"]:
            out["suite_" + case["name"]] = {"base": score(model, case, None),
                "prompted": score(model, case, p), "stacked": score(os.path.join(d, "stacked.gguf"), case, None)}
print(json.dumps(out))
PY
"$BIN" inspect "$DIR/stacked.gguf" | grep -A3 "sleep.history" >&2 || true
