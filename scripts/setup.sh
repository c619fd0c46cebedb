#!/usr/bin/env bash
# Installs what gguf-sleep needs to build and test on a fresh Debian machine. Idempotent.
#   system: cmake, libclang-dev, libopenblas-dev, a C++ compiler, pkg-config, time (benchmarks)
#   python: the `gguf` package (an independent GGUF reader used by the tests)
set -euo pipefail

need_apt=()
for pkg in cmake libclang-dev libopenblas-dev g++ pkg-config python3 python3-pip time; do
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
echo "setup: ok" >&2
