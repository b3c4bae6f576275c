# tests/tap.sh - TAP output for the shell tests (sourced, not run).
#
# The caller sets D (its scratch directory) first.  run NAME FUNCTION runs a
# scenario: it passes when FUNCTION returns 0, and what FUNCTION prints
# (why it failed) becomes TAP comments.  At the end the caller prints
# "1..$n" and exits with [ "$failed" -eq 0 ].  TAP_TIMES=1 adds each
# scenario's duration as a comment.

n=0
failed=0

ok() {
    n=$((n + 1))
    echo "ok $n - $1"
}

not_ok() {
    n=$((n + 1))
    failed=$((failed + 1))
    echo "not ok $n - $1"
    [ -s "$D/why" ] && sed 's/^/# /' "$D/why"
    return 0
}

skip() {
    n=$((n + 1))
    echo "ok $n - # SKIP $1"
}

run() {
    : >"$D/why"
    local t0=$SECONDS
    if "$2" >>"$D/why" 2>&1; then ok "$1"; else not_ok "$1"; fi
    if [ "${TAP_TIMES:-0}" = 1 ]; then echo "# $((SECONDS - t0)) s"; fi
    return 0
}

# expect WHAT GOT WANT: fails, saying so, when GOT is not WANT.
expect() {
    if [ "$2" != "$3" ]; then
        echo "$1: got '$2', want '$3'"
        return 1
    fi
}
