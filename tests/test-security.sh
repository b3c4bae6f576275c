#!/bin/bash
# tests/test-security.sh - who may do what, with a real second uid.
#
# burstd runs as root on a temporary socket which the test deliberately
# opens to everyone (chmod 0666; burstd itself never does that).  The burst
# CLI then runs as root and as nobody (setpriv): nobody can use the daemon
# for its own jobs, but every look at or touch of root's jobs is refused
# with a clear "permission denied" naming the job (exit status 3), and it
# cannot change the quota.  A second daemon with admin_group = nogroup
# shows the admin-group rule (nobody's primary group is nogroup), and a
# daemon running as nobody shows the daemon's-own-uid rule.  Prints TAP;
# skips when not root or without setpriv.
#
# Needs: BURSTD, BURST, BURST_WORKER.
set -uo pipefail

: "${BURSTD:?set BURSTD to the burstd binary}"
: "${BURST:?set BURST to the burst binary}"
: "${BURST_WORKER:?set BURST_WORKER to the burst-worker binary}"

if [ "$(id -u)" -ne 0 ]; then
    echo "1..0 # SKIP needs root to run a second uid"
    exit 0
fi
if ! command -v setpriv >/dev/null 2>&1; then
    echo "1..0 # SKIP setpriv (util-linux) is not installed"
    exit 0
fi
if ! getent passwd nobody >/dev/null || ! getent group nogroup >/dev/null; then
    echo "1..0 # SKIP no user nobody or group nogroup"
    exit 0
fi

# Everything nobody must reach lives under one 0755 temp dir.
D=$(mktemp -d /tmp/burst-sec-test.XXXXXX)
chmod 0755 "$D"
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)

# nobody must be able to run the binaries; copy them (with libburst, which
# the CLI finds beside itself) when the build dir is closed to it.
if ! "${NOBODY[@]}" "$BURST" --version >/dev/null 2>&1 ||
    ! "${NOBODY[@]}" test -x "$BURSTD" || ! "${NOBODY[@]}" test -x "$BURST_WORKER"; then
    mkdir -m 0755 "$D/bin"
    cp "$BURST" "$BURSTD" "$BURST_WORKER" "$D/bin/"
    cp -P "$(dirname "$BURST")"/libburst.so* "$D/bin/" 2>/dev/null || true
    chmod 0755 "$D/bin"/*
    BURST=$D/bin/$(basename "$BURST")
    BURSTD=$D/bin/$(basename "$BURSTD")
    BURST_WORKER=$D/bin/$(basename "$BURST_WORKER")
fi
export BURST_WORKER
unset BURST_SOCKET

# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# start_daemon NAME SOCKET STATE CONFIG [as-nobody]: waits for the socket.
start_daemon() {
    local name=$1 sock=$2 state=$3 conf=$4 who=${5:-root}
    local pre=()
    [ "$who" = nobody ] && pre=("${NOBODY[@]}")
    "${pre[@]}" "$BURSTD" --socket "$sock" --state-dir "$state" --config "$conf" \
        --quota 4 >"$D/$name.log" 2>&1 &
    PIDS+=($!)
    local pid=$!
    for _ in $(seq 1 400); do
        [ -S "$sock" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Bail out! burstd ($name) exited at start-up"
            sed 's/^/# /' "$D/$name.log"
            exit 1
        fi
        sleep 0.05
    done
    echo "Bail out! burstd ($name) did not create $sock"
    exit 1
}

stop_daemon() { # stop_daemon PID
    kill "$1" 2>/dev/null
    local st=0
    wait "$1" || st=$?
    [ "$st" -eq 0 ] || echo "burstd exited with status $st"
    return "$st"
}

# Every CLI call has a generous time limit, only as a safety net.
S=$D/burst.sock
as_root() { timeout 120 "$BURST" --socket "$S" "$@"; }
# nobody gets none of root's per-user paths.
as_nobody() {
    timeout 120 "${NOBODY[@]}" env -u HOME -u XDG_RUNTIME_DIR -u XDG_STATE_HOME \
        "$BURST" --socket "$S" "$@"
}
# nx WHO ARGS...: keeps stdout in $out, stderr in $err, the status in $rc.
nx() {
    local who=$1
    shift
    rc=0
    out=$("as_$who" "$@" 2>"$D/stderr") || rc=$?
    err=$(cat "$D/stderr")
}

printf 'idle_timeout_ms = 5000\n' >"$D/burstd.conf"
chmod 0644 "$D/burstd.conf"
start_daemon main "$S" "$D/state" "$D/burstd.conf"
MAIN_PID=${PIDS[0]}

printf 'hello\nworld\n' >"$D/in.txt"
chmod 0644 "$D/in.txt"
for _ in 1 2; do head -c 40000 /dev/zero | tr '\0' b; echo; done >"$D/big.txt"

t_modes() {
    # As burstd made them, before the test opens the socket.
    expect "socket mode" "$(stat -c %a "$S")" 600 &&
        expect "state dir mode" "$(stat -c %a "$D/state")" 700 &&
        ! "${NOBODY[@]}" "$BURST" --socket "$S" jobs >/dev/null 2>&1
}
run "burstd creates the socket 0600 and the state dir 0700; nobody cannot connect" t_modes

chmod 0666 "$S" # deliberately opened to nobody for this test

t_root_jobs() {
    nx root map --exec 'tr a-z A-Z' --input-lines "$D/in.txt" --wait
    expect "root map status" "$rc" 0 || return 1
    ROOT_DONE=$(echo "$out" | head -1)
    # Inputs (over 64 KiB) and outputs (over 64 KiB each) too large for
    # burstd's ledger: they are files in storage, which nobody must not read.
    nx root map --exec 'head -c 70000 /dev/zero | tr "\\0" r' --input-lines "$D/big.txt" --wait
    expect "root big map status" "$rc" 0 || return 1
    ROOT_BIG=$(echo "$out" | head -1)
    [ -f "$D/state/storage/jobs/$ROOT_BIG/in" ] || { echo "no input file"; return 1; }
    compgen -G "$D/state/storage/jobs/$ROOT_BIG/out/*" >/dev/null || {
        echo "no output file"
        return 1
    }
    # One task that sleeps: a job that is still running while nobody tries.
    nx root map --exec 'sleep 600'
    expect "root running map status" "$rc" 0 || return 1
    ROOT_RUN=$(echo "$out" | head -1)
    [ -n "$ROOT_DONE" ] && [ -n "$ROOT_RUN" ] && [ -n "$ROOT_BIG" ]
}
run "root submits a finished and a running job" t_root_jobs

t_nobody_own() {
    nx nobody map --exec 'tr a-z A-Z' --input-lines - --wait <"$D/in.txt"
    expect "nobody map status ($err)" "$rc" 0 || return 1
    NOBODY_JOB=$(echo "$out" | head -1)
    nx nobody results "$NOBODY_JOB"
    expect "nobody results" "$out" "$(printf 'HELLO\nWORLD')" || return 1
    nx nobody show "$NOBODY_JOB" --json
    expect "nobody show status ($err)" "$rc" 0 || return 1
    echo "$out" | grep -q '"state": *"succeeded"' || { echo "show: $out"; return 1; }
    nx nobody tasks "$NOBODY_JOB"
    expect "nobody tasks status ($err)" "$rc" 0 || return 1
    nx nobody logs "$NOBODY_JOB" 0
    expect "nobody logs status ($err)" "$rc" 0 || return 1
    nx nobody wait "$NOBODY_JOB"
    expect "nobody wait status ($err)" "$rc" 0 || return 1
    nx nobody jobs --all --json
    expect "nobody jobs status ($err)" "$rc" 0 || return 1
    echo "$out" | grep -q "\"id\": *$NOBODY_JOB\b" || { echo "jobs --all: $out"; return 1; }
}
run "nobody submits, runs and inspects its own job" t_nobody_own

t_nobody_runs_as_nobody() {
    nx nobody map --exec 'id -u; id -g; echo "$HOME"' --wait
    expect "nobody map status ($err)" "$rc" 0 || return 1
    nx nobody results "$(echo "$out" | head -1)"
    expect "the task's ids and home" "$out" \
        "$(printf '%s\n%s\n%s' "$(id -u nobody)" "$(id -g nobody)" \
            "$(getent passwd nobody | cut -d: -f6)")"
}
run "nobody's tasks run as nobody, with nobody's HOME" t_nobody_runs_as_nobody

t_nobody_storage() {
    # The worker (the task's parent) holds the storage root on a descriptor;
    # through it the task reaches its own job, and nothing of root's.  Its
    # input is large enough to be a file in storage (a small one travels
    # with the worker's request).
    local probe
    probe='s=/proc/$PPID/fd/3
cat "$s/jobs/$BURST_JOB_ID/in" >/dev/null && echo own-input
cat "$s/jobs/'"$ROOT_BIG"'/in" && echo LEAK-input
ls "$s/jobs" && echo LEAK-list
cat "$s/jobs/'"$ROOT_BIG"'/out/"* && echo LEAK-output
cat "'"$D"'/state/ledger.db" >/dev/null && echo LEAK-ledger
true'
    head -c 70000 /dev/zero | tr '\0' x >"$D/probe.in"
    echo >>"$D/probe.in"
    chmod 0644 "$D/probe.in"
    nx nobody map --exec "$probe" --input-lines "$D/probe.in" --wait
    expect "nobody probe status ($err)" "$rc" 0 || return 1
    nx nobody results "$(echo "$out" | head -1)"
    expect "what nobody's task could read" "$out" own-input
}
run "nobody's task reads its own job's storage and nothing of root's" t_nobody_storage

t_nobody_symlink() {
    # The task leaves behind a process in a session of its own which, once
    # the worker has written the task's output, swaps that object for a
    # symlink to a root-only file.  Reading the result then must not serve
    # bytes of that file.  The result is larger than what burstd keeps in
    # its ledger (64 KiB), so the output object is a file in storage.
    local attack
    attack='spec=$BURST_SPEC
cd "/proc/$PPID/fd/3/jobs/$BURST_JOB_ID/out" || exit 1
setsid sh -c ": >ready; i=0; while [ ! -f \"\$0\" ] && [ \$i -lt 1200 ]; do sleep 0.05; i=\$((i+1)); done; ln -sf /etc/shadow \"\$0\"" \
    "${spec##*/}.0" </dev/null >/dev/null 2>&1 &
# Once out of our process group it outlives the task.
while [ ! -e ready ]; do sleep 0.02; done
printf "%070000d" 0'
    nx nobody map --exec "$attack" --retries 0 --wait
    expect "the job runs ($err)" "$rc" 0 || return 1
    local job link=
    job=$(echo "$out" | head -1)
    for _ in $(seq 600); do
        link=$(find "$D/state" -path "*/jobs/$job/out/*" -type l | head -1)
        [ -n "$link" ] && break
        sleep 0.05
    done
    [ -n "$link" ] || { echo "the planted symlink never appeared"; return 1; }
    nx nobody results "$job"
    if [ "$rc" -eq 0 ] && [ "$out" != "$(printf '%070000d' 0)" ]; then
        echo "burstd served other bytes for nobody's result: $out"
        return 1
    fi
    [ "$rc" -ne 0 ] || { echo "results read through the symlink"; return 1; }
}
run "an output swapped for a symlink by nobody is not read through" t_nobody_symlink

# refused WHAT ARGS...: exit 3 and a permission message naming the job.
refused() {
    local job=$1
    shift
    nx nobody "$@"
    if [ "$rc" -ne 3 ]; then
        echo "nobody $*: exit $rc, want 3 (stdout '$out', stderr '$err')"
        return 1
    fi
    if ! echo "$err" | grep -qi "permission" || ! echo "$err" | grep -q "job $job\b"; then
        echo "nobody $*: message '$err' should say permission and name job $job"
        return 1
    fi
    if [ -n "$out" ] && [ "$1" != watch ]; then
        echo "nobody $*: printed '$out'"
        return 1
    fi
}

t_refusals() {
    local j r=0
    for j in "$ROOT_DONE" "$ROOT_RUN"; do
        refused "$j" show "$j" || r=1
        refused "$j" show "$j" --json || r=1
        refused "$j" tasks "$j" || r=1
        refused "$j" results "$j" || r=1
        refused "$j" logs "$j" 0 || r=1
        refused "$j" cancel "$j" || r=1
        refused "$j" wait "$j" || r=1
        refused "$j" watch "$j" || r=1
    done
    return $r
}
run "nobody is refused show/tasks/results/logs/cancel/wait/watch of root's jobs" t_refusals

t_still_running() {
    nx root show "$ROOT_RUN" --json
    expect "root show status" "$rc" 0 || return 1
    echo "$out" | grep -Eq '"state": *"(queued|running)"' || {
        echo "root's job should still run after nobody's cancel: $out"
        return 1
    }
}
run "root's running job is untouched by nobody's cancel" t_still_running

t_jobs_hidden() {
    local v
    for v in "jobs" "jobs --all" "jobs --all --json"; do
        # shellcheck disable=SC2086
        nx nobody $v
        expect "nobody $v status ($err)" "$rc" 0 || return 1
        if echo "$out" | grep -Eq "(\"id\": *|^ *)($ROOT_DONE|$ROOT_RUN)\b"; then
            echo "nobody $v lists root's jobs:"
            echo "$out"
            return 1
        fi
    done
}
run "nobody's jobs and jobs --all do not list root's jobs" t_jobs_hidden

t_quota() {
    nx nobody quota
    expect "nobody quota read ($err)" "$rc" 0 || return 1
    nx nobody quota --set 9
    expect "nobody quota --set status" "$rc" 3 || return 1
    echo "$err" | grep -qi "admin" || { echo "message: $err"; return 1; }
    nx root quota
    echo "$out" | grep -qw 4 || { echo "quota changed: $out"; return 1; }
    echo "$out" | grep -qw 9 && { echo "quota changed: $out"; return 1; }
    return 0
}
run "quota --set as nobody is refused and changes nothing" t_quota

t_root_sees_all() {
    nx root jobs --all --json
    expect "root jobs --all status" "$rc" 0 || return 1
    echo "$out" | grep -q "\"id\": *$NOBODY_JOB\b" || { echo "jobs --all: $out"; return 1; }
    nx root show "$NOBODY_JOB"
    expect "root show nobody's job ($err)" "$rc" 0 || return 1
    nx root results "$NOBODY_JOB"
    expect "root results of nobody's job" "$out" "$(printf 'HELLO\nWORLD')" || return 1
    nx root cancel "$ROOT_RUN"
    expect "root cancel ($err)" "$rc" 0 || return 1
    nx root wait "$ROOT_RUN"
    expect "root wait on its cancelled job" "$rc" 1
}
run "root sees and steers every job, nobody's included" t_root_sees_all

t_unknown_job() {
    # An unknown job is "no such job" for anyone, not a permission error.
    nx nobody show 987654
    expect "nobody show unknown" "$rc" 3 || return 1
    echo "$err" | grep -q 987654 && ! echo "$err" | grep -qi permission
}
run "an unknown job is 'no such job', not 'permission'" t_unknown_job

t_main_stop() { stop_daemon "$MAIN_PID"; }
run "burstd stops cleanly" t_main_stop

# ---- admin_group: nobody's primary group (its SO_PEERCRED gid) ------------
S2=$D/admin.sock
printf 'admin_group = nogroup\n' >"$D/admin.conf"
chmod 0644 "$D/admin.conf"
start_daemon admin "$S2" "$D/admin-state" "$D/admin.conf"
chmod 0666 "$S2"

t_admin_group() {
    S=$S2
    nx root map --exec 'echo hi'
    expect "root submit" "$rc" 0 || return 1
    local job
    job=$(echo "$out" | head -1)
    nx nobody show "$job"
    expect "nobody (admin_group) shows root's job ($err)" "$rc" 0 || return 1
    nx nobody jobs --all --json
    echo "$out" | grep -q "\"id\": *$job\b" || { echo "jobs --all: $out"; return 1; }
    nx nobody wait "$job"
    expect "nobody (admin_group) waits on root's job ($err)" "$rc" 0 || return 1
    nx nobody results "$job"
    expect "nobody (admin_group) reads root's results" "$out" hi || return 1
    nx nobody quota --set 3
    expect "nobody (admin_group) sets the quota ($err)" "$rc" 0 || return 1
    # A uid outside the group stays an ordinary user.
    rc=0
    err=$(timeout 120 setpriv --reuid=65533 --regid=65533 --clear-groups -- \
        "$BURST" --socket "$S2" show "$job" 2>&1 >/dev/null) || rc=$?
    expect "uid 65533 show" "$rc" 3 || return 1
    echo "$err" | grep -qi permission || { echo "uid 65533: $err"; return 1; }
}
run "admin_group = nogroup makes nobody an admin, not uid 65533" t_admin_group

t_admin_stop() { stop_daemon "${PIDS[1]}"; }
run "second burstd stops cleanly" t_admin_stop

# ---- a daemon running as nobody: its own uid is an admin ------------------
# Its socket and state live in a dir nobody owns.
mkdir -m 0755 "$D/own"
chown nobody:nogroup "$D/own"
S3=$D/own/burst.sock
: >"$D/own.conf"
chmod 0644 "$D/own.conf"
start_daemon own "$S3" "$D/own/state" "$D/own.conf" nobody

t_own_uid() {
    S=$S3
    nx nobody quota --set 2
    expect "nobody sets the quota of its own daemon ($err)" "$rc" 0 || return 1
    nx nobody map --exec 'echo mine' --wait
    expect "nobody runs a job on its own daemon ($err)" "$rc" 0 || return 1
    # root is an admin of every daemon, so it is the one to check the job.
    local job
    job=$(echo "$out" | head -1)
    nx root results "$job"
    expect "root reads it" "$out" mine || return 1
    expect "socket owner" "$(stat -c %U "$S3")" nobody || return 1
    expect "socket mode" "$(stat -c %a "$S3")" 600 || return 1
    # It cannot run root's tasks as root, so it refuses them up front.
    nx root map --exec 'id -u'
    expect "root's submission to nobody's burstd" "$rc" 3 || return 1
    echo "$err" | grep -q "can run tasks only as that user" || {
        echo "message: $err"
        return 1
    }
}
run "a burstd running as nobody treats nobody as admin, and refuses root's jobs" t_own_uid

t_own_stop() { stop_daemon "${PIDS[2]}"; }
run "burstd as nobody stops cleanly" t_own_stop

echo "1..$n"
[ "$failed" -eq 0 ]
