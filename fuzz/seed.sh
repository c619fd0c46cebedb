#!/usr/bin/env bash
# Writes the seed corpus for the fuzz targets (synthetic GGUFs and inputs derived from the
# SmolLM2 test model, see gguf/tests/fuzz_seeds.rs) into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
for target in reader roundtrip; do
    GGUF_FUZZ_SEED_DIR="$PWD/fuzz/corpus/$target" \
        cargo test -q -p gguf --test fuzz_seeds >/dev/null
done
ls -l fuzz/corpus/reader
