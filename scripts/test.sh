#!/usr/bin/env bash
# The test command: installs what is missing, fetches the models (sha256-checked), builds and
# runs every test (unit tests, the container and engine tests on the real models, CLI tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
bash scripts/fetch-models.sh >/dev/null
export GGUF_SLEEP_MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
# Two cores: running model-heavy tests in parallel only thrashes.
cargo test --release --workspace -- --test-threads=1 "$@"
