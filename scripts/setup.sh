#!/usr/bin/env bash
# Installs what gguf-sleep needs to build and test on a fresh Debian machine. Idempotent.
#   system: cmake, libclang-dev, libopenblas-dev, a C++ compiler, pkg-config, time (benchmarks)
#   python: the `gguf` package (an independent GGUF reader used by the tests)
#   node:   node-llama-cpp, pinned in runtimes/node (an independent llama.cpp runtime for the
#           outputs, used by tests/runtime_node.rs)
set -euo pipefail

need_apt=()
pkgs=(cmake libclang-dev libopenblas-dev g++ pkg-config python3 python3-pip time)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
for pkg in "${pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c "import gguf, numpy" >/dev/null 2>&1; then
    echo "setup: installing the python gguf reader" >&2
    "$PY" -m pip install -q "gguf==0.17.1" "numpy<3" 2>/dev/null \
        || "$PY" -m pip install -q --break-system-packages "gguf==0.17.1" "numpy<3"
fi
NODE_RT="$(dirname "$0")/../runtimes/node"
if [ ! -f "$NODE_RT/node_modules/.package-lock.json" ] \
    || [ "$NODE_RT/package-lock.json" -nt "$NODE_RT/node_modules/.package-lock.json" ]; then
    echo "setup: installing node-llama-cpp into runtimes/node" >&2
    # Its prebuilt linux-x64 binaries are a direct dependency; the optional GPU builds and the
    # postinstall (which would look for a GPU build or compile llama.cpp) are skipped.
    (cd "$NODE_RT" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true \
        npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
echo "setup: ok" >&2
