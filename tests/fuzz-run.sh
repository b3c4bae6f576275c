#!/bin/bash
# tests/fuzz-run.sh BINARY [SECONDS [LIBFUZZER-ARGS...]] - runs one
# libFuzzer binary for a bounded time on an empty temporary corpus (the
# 'fuzz' suite).  The seed is fixed (FUZZ_SEED, default 1) so a run can be
# repeated; on failure the input that broke it is dumped into the log, as
# the temporary directory goes away.
set -uo pipefail
bin=${1:?usage: fuzz-run.sh BINARY [SECONDS [ARGS...]]}
secs=${2:-30}
shift $(($# >= 2 ? 2 : 1))

dir=$(mktemp -d /tmp/burst-fuzz.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/corpus"

rc=0
"$bin" -max_total_time="$secs" -rss_limit_mb=2048 -seed="${FUZZ_SEED:-1}" \
    -artifact_prefix="$dir/" -print_final_stats=1 "$@" "$dir/corpus" \
    >"$dir/log" 2>&1 || rc=$?
tail -n 40 "$dir/log"
if [ "$rc" -ne 0 ]; then
    for f in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* "$dir"/slow-unit-*; do
        [ -e "$f" ] || continue
        echo "== $(basename "$f") ($(stat -c %s "$f") bytes):"
        od -A d -t x1z "$f" | head -64
    done
    echo "$(basename "$bin") failed (exit $rc)"
fi
exit "$rc"
