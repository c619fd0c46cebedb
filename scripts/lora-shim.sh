#!/usr/bin/env bash
# Stand-in for the gguf-sleep binary that runs a bake through an unmerged LoRA adapter.
#
# Scripts that call `BIN bake MODEL ... -o OUT` and then `BIN generate OUT ...` (such as the
# persona suite) measure the merged, requantized model. Passed as BIN instead, this shim bakes
# with `--emit lora`, writes the adapter to OUT and the base model's path beside it, and answers
# `generate OUT` with `generate BASE --lora OUT`: the adapter applied by llama.cpp at load time.
#
#   GGUF_SLEEP_BIN=target/release/gguf-sleep \
#   PE_CMD=bake python3 ../shared/eval/persona_eval.py scripts/lora-shim.sh MODEL SUITE.json
#
# Any other subcommand is passed through unchanged.
set -euo pipefail
bin="${GGUF_SLEEP_BIN:-$(dirname "$0")/../target/release/gguf-sleep}"
cmd="${1:-}"
case "$cmd" in
bake)
    shift
    model="$1"
    out=""
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        if [[ "${args[$i]}" == "-o" || "${args[$i]}" == "--output" ]]; then
            out="${args[$((i + 1))]}"
        fi
    done
    [[ -n "$out" ]] || { echo "lora-shim: bake needs -o OUT" >&2; exit 2; }
    "$bin" bake "$@" --init none --emit lora
    realpath "$model" >"$out.base"
    ;;
generate)
    model="$2"
    if [[ -f "$model.base" ]]; then
        shift 2
        exec "$bin" generate "$(cat "$model.base")" --lora "$model" "$@"
    fi
    exec "$bin" "$@"
    ;;
*)
    exec "$bin" "$@"
    ;;
esac
