#!/bin/bash
# tests/integration/valgrind.sh - the whole CLI scenario suite (cli.sh) with
# burstd running under valgrind: the daemon must make no invalid access and
# leak nothing (definite or indirect) over a run that exercises every
# command, failure and cancellation.  Prints cli.sh's TAP plus one line of
# its own.
set -uo pipefail
: "${BURSTD:?set BURSTD to the burstd binary}"
if ! command -v valgrind >/dev/null; then
    echo "1..0 # SKIP valgrind is not installed"
    exit 0
fi
D=$(mktemp -d /tmp/burst-valgrind.XXXXXX)
trap 'rm -rf "$D"' EXIT
cat >"$D/burstd" <<WRAP
#!/bin/bash
exec valgrind --quiet --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --log-file="$D/valgrind.%p.log" "$BURSTD" "\$@"
WRAP
chmod +x "$D/burstd"
# Under valgrind the daemon is many times slower; the CLI's safety limits
# are only there to stop a hung run.
BURSTD="$D/burstd" CLI_TEST_TIMEOUT=900 bash "$(dirname "$0")/cli.sh" >"$D/tap"
status=$?
grep -v '^1\.\.[0-9]*$' "$D/tap"
n=$(grep -cE '^(not )?ok ' "$D/tap")
n=$((n + 1))
# cli.sh stops burstd with SIGTERM, so valgrind has written its final report.
errors=$(cat "$D"/valgrind.*.log 2>/dev/null)
if [ -z "$errors" ] && ls "$D"/valgrind.*.log >/dev/null 2>&1; then
    echo "ok $n - burstd ran valgrind-clean under the whole CLI suite"
else
    echo "not ok $n - burstd ran valgrind-clean under the whole CLI suite"
    echo "$errors" | head -200 | sed 's/^/# /'
    status=1
fi
echo "1..$n"
exit "$status"
