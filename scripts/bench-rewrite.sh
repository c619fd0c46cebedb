#!/usr/bin/env bash
# Benchmarks the streamed GGUF writer: `gguf-sleep rewrite MODEL -o OUT` (no edits) against `cp`
# of the same file, on the Gemma-3 test model by default.
#   time:  median wall time of 3 runs each, page cache warm (the input is read once first);
#          `cp` + `sync OUT` is shown too, since rewrite fsyncs its output and cp does not.
#   RSS:   peak resident set of rewrite (/usr/bin/time -v) against the process baseline, the
#          peak of `gguf-sleep inspect MODEL` (same binary, same header parse, no data copy).
# Goals: rewrite/cp <= 1.5, rewrite RSS <= baseline + 64 MiB.
# Usage: scripts/bench-rewrite.sh [MODEL]     (BENCH_DIR=dir to choose where outputs go)
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${GGUF_SLEEP_MODELS:-$HOME/.cache/gguf-sleep}
MODEL=${1:-$MODELS/gemma-3-270m-q4_k_m.gguf}
[ -f "$MODEL" ] || { echo "bench: $MODEL not found: run scripts/fetch-models.sh" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time not found: apt-get install time" >&2; exit 1; }
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR"
BIN=target/release/gguf-sleep

cargo build --release -q --bin gguf-sleep

now() { date +%s%N; }
# run LABEL CMD...: runs CMD under /usr/bin/time, prints "seconds peak_rss_kib".
run() {
    local t0 t1 rss
    t0=$(now)
    /usr/bin/time -f "%M" -o "$DIR/rss" "$@" >/dev/null 2>"$DIR/stderr" || {
        cat "$DIR/stderr" >&2
        exit 1
    }
    t1=$(now)
    rss=$(tail -n 1 "$DIR/rss")
    echo "$(( (t1 - t0) / 1000 )) $rss"
}
median() { sort -n | sed -n 2p; }

cat "$MODEL" >/dev/null
cp "$MODEL" "$DIR/warm.gguf" && rm -f "$DIR/warm.gguf"
"$BIN" rewrite "$MODEL" -o "$DIR/warm.gguf" 2>/dev/null && rm -f "$DIR/warm.gguf"

cp_us=() sync_us=() rw_us=() rw_rss=()
for i in 1 2 3; do
    rm -f "$DIR/cp.gguf" "$DIR/cps.gguf" "$DIR/rw.gguf"
    read -r us _ < <(run cp "$MODEL" "$DIR/cp.gguf")
    cp_us+=("$us")
    read -r us _ < <(run sh -c 'cp "$1" "$2" && sync "$2"' sh "$MODEL" "$DIR/cps.gguf")
    sync_us+=("$us")
    read -r us rss < <(run "$BIN" rewrite "$MODEL" -o "$DIR/rw.gguf")
    rw_us+=("$us")
    rw_rss+=("$rss")
done
cmp "$MODEL" "$DIR/rw.gguf" || { echo "bench: rewrite output differs from the input" >&2; exit 1; }
read -r _ base_rss < <(run "$BIN" inspect "$MODEL")

cp_med=$(printf '%s\n' "${cp_us[@]}" | median)
sync_med=$(printf '%s\n' "${sync_us[@]}" | median)
rw_med=$(printf '%s\n' "${rw_us[@]}" | median)
rss_med=$(printf '%s\n' "${rw_rss[@]}" | median)
size=$(stat -c %s "$MODEL")

awk -v size="$size" -v cp="$cp_med" -v cps="$sync_med" -v rw="$rw_med" \
    -v rss="$rss_med" -v base="$base_rss" -v model="$MODEL" \
    -v cpall="${cp_us[*]}" -v syncall="${sync_us[*]}" -v rwall="${rw_us[*]}" 'BEGIN {
    printf "model             %s (%.1f MiB)\n", model, size / 1048576
    printf "cp                %.3f s median (runs, us: %s)\n", cp / 1e6, cpall
    printf "cp + sync         %.3f s median (runs, us: %s)\n", cps / 1e6, syncall
    printf "rewrite           %.3f s median (runs, us: %s), output identical to input\n", rw / 1e6, rwall
    printf "ratio rewrite/cp  %.2f (goal <= 1.5); rewrite/(cp+sync) %.2f\n", rw / cp, rw / cps
    printf "peak RSS          rewrite %.1f MiB, baseline (inspect) %.1f MiB, delta %.1f MiB (goal <= 64)\n", rss / 1024, base / 1024, (rss - base) / 1024
}'
rm -f "$DIR/cp.gguf" "$DIR/cps.gguf" "$DIR/rw.gguf" "$DIR/rss" "$DIR/stderr"
