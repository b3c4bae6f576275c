#!/bin/bash
# tests/integration/cli.sh - the `burst` CLI against a real burstd and real
# workers, checking outcomes (results, states, exit codes, messages) of the
# CLI contract in DESIGN.md.  Prints TAP.
#
# Needs: BURSTD, BURST, BURST_WORKER (burstd finds the worker through it)
# and TEST_FNS (tests/fns/test_fns.so: echo, upper, crash_on_marker,
# sum_numbers, concat).
set -euo pipefail

: "${BURSTD:?set BURSTD to the burstd binary}"
: "${BURST:?set BURST to the burst binary}"
: "${BURST_WORKER:?set BURST_WORKER to the burst-worker binary}"
: "${TEST_FNS:?set TEST_FNS to test_fns.so}"
export BURST_WORKER

D=$(mktemp -d /tmp/burst-cli-test.XXXXXX)
S=$D/burst.sock
export BURST_SOCKET=$S
DAEMON_PID=

cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$D"
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap stops burstd.
trap 'exit 143' TERM
trap 'exit 130' INT

"$BURSTD" --socket "$S" --state-dir "$D/state" >"$D/burstd.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 200); do
    [ -S "$S" ] && break
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "Bail out! burstd exited at start-up"
        sed 's/^/# /' "$D/burstd.log"
        exit 1
    fi
    sleep 0.05
done
if [ ! -S "$S" ]; then
    echo "Bail out! burstd did not create $S"
    exit 1
fi

# run NAME FUNCTION: a scenario passes when its function returns 0; the
# function writes what went wrong into $D/why.
TAP_TIMES=1
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/../tap.sh"
# Every CLI call gets a generous time limit, only as a safety net.
b() { timeout "${CLI_TEST_TIMEOUT:-300}" "$BURST" "$@"; }
# Runs the CLI, keeping stdout in $out, stderr in $err and the status in $rc.
bx() {
    rc=0
    out=$(b "$@" 2>"$D/stderr") || rc=$?
    err=$(cat "$D/stderr")
}

# A 100-line text with mixed case, punctuation and a blank line.
for i in $(seq 1 100); do
    if [ "$i" = 50 ]; then echo; else echo "Line $i of the quick brown Fox, jumps=$((i * 7))"; fi
done >"$D/in.txt"
tr a-z A-Z <"$D/in.txt" >"$D/upper.txt"

# ---- scenarios -----------------------------------------------------------------

JOB_UPPER=
t_map_exec() {
    bx map --exec 'tr a-z A-Z' --input-lines "$D/in.txt" --wait
    expect "exit status" "$rc" 0 || return 1
    JOB_UPPER=$(head -n 1 <<<"$out")
    [[ "$JOB_UPPER" =~ ^[0-9]+$ ]] || { echo "first line is not a job id: $out"; return 1; }
    b results "$JOB_UPPER" >"$D/got.txt"
    cmp "$D/got.txt" "$D/upper.txt"
}

t_chunksize_order() {
    bx map --exec cat --input-lines "$D/in.txt" --chunksize 7 --wait
    expect "exit status" "$rc" 0 || return 1
    local job
    job=$(head -n 1 <<<"$out")
    b results "$job" >"$D/got.txt"
    cmp "$D/got.txt" "$D/in.txt" || return 1
    # One file per task, zero-padded to the widest index (99: two digits).
    b results "$job" --output "$D/out" || return 1
    expect "files" "$(ls "$D/out" | wc -l)" 100 || return 1
    expect "file 07" "$(cat "$D/out/07")" "$(sed -n 8p "$D/in.txt")" || return 1
    cat "$D/out/"* | cmp - "$D/in.txt"
}

t_map_so() {
    bx map --so "$TEST_FNS:upper" --input-lines "$D/in.txt" --wait
    expect "exit status" "$rc" 0 || { echo "$err"; return 1; }
    b results "$(head -n 1 <<<"$out")" >"$D/got.txt"
    cmp "$D/got.txt" "$D/upper.txt"
}

t_map_reduce_exec() {
    bx map-reduce --exec 'wc -w' --reduce-exec "awk '{ s += \$1 } END { print s }'" \
        --input-lines "$D/in.txt" --wait
    expect "exit status" "$rc" 0 || { echo "$err"; return 1; }
    local want
    want=$(wc -w <"$D/in.txt" | tr -d ' ')
    expect "word count" "$(b results "$(head -n 1 <<<"$out")")" "$want"
}

t_map_reduce_so() {
    printf '1\n2\n3\n40\n' >"$D/nums.txt"
    bx map-reduce --so "$TEST_FNS:echo" --reduce-so "$TEST_FNS:sum_numbers" \
        --input-lines "$D/nums.txt" --wait
    expect "exit status" "$rc" 0 || { echo "$err"; return 1; }
    expect "sum" "$(b results "$(head -n 1 <<<"$out")" | tr -d ' \n')" 46
}

t_show_json() {
    b show "$JOB_UPPER" --json >"$D/show.json" || return 1
    grep -q "\"id\": $JOB_UPPER," "$D/show.json" || { cat "$D/show.json"; return 1; }
    grep -q '"state": "succeeded"' "$D/show.json" || { cat "$D/show.json"; return 1; }
    grep -q '"total": 100,' "$D/show.json" || { cat "$D/show.json"; return 1; }
    grep -q '"counts": {' "$D/show.json" || return 1
    grep -q '"succeeded": 100' "$D/show.json" || return 1
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
assert d["counts"]["succeeded"] == 100 and d["kind"] == "map", d' "$D/show.json"
    fi
    b show "$JOB_UPPER" | grep -qx 'state: SUCCEEDED'
}

t_jobs_all() {
    bx jobs --all
    expect "exit status" "$rc" 0 || return 1
    head -n 1 <<<"$out" | grep -q '^JOBID  *NAME  *OWNER  *STATE  *TASKS  *DONE  *FAILED  *ELAPSED  *FUNCTION$' ||
        { echo "bad header: $out"; return 1; }
    awk 'NR > 1 { print $1 }' <<<"$out" | grep -qx "$JOB_UPPER" || { echo "$out"; return 1; }
    expect "jobs listed" "$(tail -n +2 <<<"$out" | wc -l)" 5 || return 1
    b jobs --all --json | grep -c '"id":' | grep -qx 5
}

t_tasks_state() {
    expect "succeeded" "$(b tasks "$JOB_UPPER" --state succeeded | tail -n +2 | wc -l)" 100 ||
        return 1
    expect "failed" "$(b tasks "$JOB_UPPER" --state FAILED | tail -n +2 | wc -l)" 0 || return 1
    bx tasks "$JOB_UPPER" --state bogus
    expect "bad state exit" "$rc" 2
}

t_retries() {
    printf 'a\nb\nc\n' >"$D/abc.txt"
    mkdir -p "$D/flags"
    bx map --exec "if [ -e $D/flags/flag_\$BURST_TASK_INDEX ]; then cat; else touch $D/flags/flag_\$BURST_TASK_INDEX; exit 1; fi" \
        --retries 2 --input-lines "$D/abc.txt" --wait
    expect "exit status" "$rc" 0 || { echo "$err"; return 1; }
    local job
    job=$(head -n 1 <<<"$out")
    expect "results" "$(b results "$job")" "$(cat "$D/abc.txt")" || return 1
    b tasks "$job" >"$D/tasks.txt"
    expect "attempts" "$(awk 'NR > 1 { print $2, $3 }' "$D/tasks.txt" | sort -u)" "SUCCEEDED 2" ||
        { cat "$D/tasks.txt"; return 1; }
}

t_timeout() {
    bx map --exec 'sleep 30' --timeout 0.5 --wait
    expect "exit status" "$rc" 1 || return 1
    grep -q 'FAILED' <<<"$err" || { echo "stderr: $err"; return 1; }
    local job
    job=$(head -n 1 <<<"$out")
    expect "task state" "$(b tasks "$job" | awk 'NR == 2 { print $2 }')" TIMEOUT
}

t_cancel() {
    printf '1\n2\n3\n4\n5\n' >"$D/five.txt"
    bx map --exec 'sleep 60' --input-lines "$D/five.txt"
    expect "submit" "$rc" 0 || return 1
    local job=$out
    b cancel "$job" || return 1
    bx wait "$job"
    expect "wait exit" "$rc" 1 || return 1
    grep -q CANCELLED <<<"$err" || { echo "stderr: $err"; return 1; }
    b show "$job" | grep -qx 'state: CANCELLED'
}

t_crash() {
    printf 'one\nCRASH here\nthree\n' >"$D/crash.txt"
    bx map --so "$TEST_FNS:crash_on_marker" --input-lines "$D/crash.txt" --wait
    expect "exit status" "$rc" 1 || return 1
    local job
    job=$(head -n 1 <<<"$out")
    b tasks "$job" >"$D/tasks.txt"
    expect "task 1" "$(awk '$1 == 1 { print $2, $5 }' "$D/tasks.txt")" "FAILED 11" ||
        { cat "$D/tasks.txt"; return 1; }
    expect "others" "$(awk 'NR > 1 && $1 != 1 { print $2 }' "$D/tasks.txt" | sort -u)" SUCCEEDED ||
        { cat "$D/tasks.txt"; return 1; }
    # The results of the tasks that succeeded are still there.
    bx results "$job" --output "$D/crash"
    expect "results exit" "$rc" 1 || return 1
    expect "task 2" "$(cat "$D/crash/2")" three
}

t_logs() {
    printf 'x\ny\n' >"$D/xy.txt"
    bx map --exec 'echo "oops from $BURST_TASK_INDEX" >&2; cat' --input-lines "$D/xy.txt" --wait
    expect "exit status" "$rc" 0 || return 1
    local job
    job=$(head -n 1 <<<"$out")
    expect "log of task 1" "$(b logs "$job" 1)" "oops from 1"
}

t_unknown_job() {
    bx show 999999
    expect "exit status" "$rc" 3 || return 1
    grep -q '^burst: ' <<<"$err" || { echo "stderr: $err"; return 1; }
    grep -q '999999' <<<"$err" || { echo "stderr: $err"; return 1; }
    bx wait 999999
    expect "wait exit" "$rc" 3 || return 1
    bx show notanumber
    expect "bad id exit" "$rc" 2
}

t_missing_symbol() {
    local before
    before=$(b jobs --all | wc -l)
    bx map --so "$TEST_FNS:no_such_function"
    [ "$rc" -ne 0 ] || { echo "exit status 0"; return 1; }
    expect "message" "$err" "burst: $TEST_FNS: symbol 'no_such_function' not found" || return 1
    bx map --so "$D/in.txt:upper"
    [ "$rc" -ne 0 ] || return 1
    expect "message" "$err" "burst: $D/in.txt is not an ELF shared library" || return 1
    expect "nothing submitted" "$(b jobs --all | wc -l)" "$before"
}

t_unreadable_input() {
    local before
    before=$(b jobs --all | wc -l)
    bx map --exec cat --input-lines "$D/no-such-file.txt"
    [ "$rc" -eq 3 ] || [ "$rc" -eq 2 ] || { echo "exit status $rc"; return 1; }
    expect "message" "$err" "burst: cannot read '$D/no-such-file.txt': No such file or directory" ||
        return 1
    expect "nothing submitted" "$(b jobs --all | wc -l)" "$before"
}

t_usage_errors() {
    bx map --exec cat --chunksize x
    expect "exit status" "$rc" 2 || return 1
    expect "message" "$(head -n 1 <<<"$err")" \
        "burst: --chunksize must be an integer from 1 to 100000, got 'x'" || return 1
    bx map --exec cat --timeout soon
    expect "timeout exit" "$rc" 2 || return 1
    bx frobnicate
    expect "unknown command exit" "$rc" 2 || return 1
    bx --socket "$D/nobody.sock" jobs
    expect "no daemon exit" "$rc" 3 || return 1
    grep -q '^burst: cannot connect' <<<"$err"
}

t_watch() {
    printf '1\n2\n3\n' >"$D/three.txt"
    bx map --exec 'sleep 1; cat' --input-lines "$D/three.txt"
    local job=$out
    bx watch "$job"
    expect "exit status" "$rc" 0 || { echo "$err"; return 1; }
    tail -n 1 <<<"$out" | grep -q "^job $job SUCCEEDED 100%" || { echo "$out"; return 1; }
}

t_quota_concurrent() {
    bx quota
    expect "quota exit" "$rc" 0 || { echo "$err"; return 1; }
    local old
    old=$(awk '/^quota:/ { print $2 }' <<<"$out")
    b quota --set 1 | grep -qx 'quota: 1' || return 1
    printf '1\n2\n3\n4\n' >"$D/four.txt"
    b map --exec 'cat' --input-lines "$D/four.txt" --wait >"$D/c1.out" 2>&1 &
    local p1=$!
    b map --exec 'tr 1-4 a-d' --input-lines "$D/four.txt" --wait >"$D/c2.out" 2>&1 &
    local p2=$!
    local r1=0 r2=0
    wait "$p1" || r1=$?
    wait "$p2" || r2=$?
    b quota --set "${old:-4}" >/dev/null || true
    expect "first" "$r1" 0 || { cat "$D/c1.out"; return 1; }
    expect "second" "$r2" 0 || { cat "$D/c2.out"; return 1; }
    expect "results 1" "$(b results "$(head -n 1 "$D/c1.out")")" "$(cat "$D/four.txt")" || return 1
    expect "results 2" "$(b results "$(head -n 1 "$D/c2.out")")" "$(printf 'a\nb\nc\nd')"
}

run "map --exec over 100 lines, results upper-cased" t_map_exec
run "results keep task order with --chunksize 7" t_chunksize_order
run "map --so TEST_FNS:upper" t_map_so
run "map-reduce exec: wc -w and an awk sum" t_map_reduce_exec
run "map-reduce so: echo and sum_numbers" t_map_reduce_so
run "show --json has id, state, total, counts" t_show_json
run "jobs --all lists the jobs" t_jobs_all
run "tasks --state succeeded" t_tasks_state
run "a flaky command succeeds with --retries 2 on attempt 2" t_retries
run "--timeout 0.5 on sleep 30: job failed, task timeout" t_timeout
run "cancel: wait exits 1, show says CANCELLED" t_cancel
run "crash_on_marker: signal 11, the others succeed" t_crash
run "logs of a task that writes to stderr" t_logs
run "unknown job id: exit 3 and a clear message" t_unknown_job
run "missing symbol and non-ELF library: clear errors" t_missing_symbol
run "unreadable input file: clear error, nothing submitted" t_unreadable_input
run "usage errors exit 2, no daemon exits 3" t_usage_errors
run "watch follows a job to its end" t_watch
run "two concurrent map --wait under quota 1 both finish" t_quota_concurrent

echo "1..$n"
if [ "$failed" -gt 0 ]; then
    echo "# $failed of $n failed; burstd log:"
    tail -n 50 "$D/burstd.log" | sed 's/^/# /'
    exit 1
fi
