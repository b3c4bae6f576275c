#!/bin/bash
# tests/test-systemd.sh - burstd as a system service: the unit files
# (systemd-analyze verify, sysusers/tmpfiles in a scratch root), socket
# activation and the readiness protocol through tests/activate.c (a stand-in
# for systemd that passes fd 3 and listens on NOTIFY_SOCKET), and the
# permissions of the socket and the state directory.  Prints TAP.
#
# Needs: BURSTD, BURST, BURST_WORKER (burstd finds the worker through it),
# ACTIVATE (the launcher) and SYSTEMD_UNITS (the source systemd/ folder).
set -euo pipefail

: "${BURSTD:?set BURSTD to the burstd binary}"
: "${BURST:?set BURST to the burst binary}"
: "${BURST_WORKER:?set BURST_WORKER to the burst-worker binary}"
: "${ACTIVATE:?set ACTIVATE to the activate launcher}"
: "${SYSTEMD_UNITS:?set SYSTEMD_UNITS to the systemd/ source folder}"
export BURST_WORKER
unset NOTIFY_SOCKET LISTEN_PID LISTEN_FDS LISTEN_FDNAMES BURST_SOCKET

D=$(mktemp -d /tmp/burst-systemd-test.XXXXXX)
chmod 0755 "$D" # so that a daemon's user other than ours could reach it
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# Every CLI call gets a generous time limit, only as a safety net.
b() { timeout 120 "$BURST" "$@"; }

# wait_for FILE REGEX PID: waits until a line of FILE matches, or PID dies.
# The 60 s bound is a safety net, not a speed requirement.
wait_for() {
    local i
    for i in $(seq 1 1200); do
        if [ -f "$1" ] && grep -qE "$2" "$1"; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then
            grep -qE "$2" "$1" 2>/dev/null && return 0
            echo "process $3 ended before '$2' appeared in $1"
            return 1
        fi
        sleep 0.05
    done
    echo "timed out waiting for '$2' in $1"
    return 1
}
# wait_socket PATH PID: waits for burstd (PID) to create its socket.
wait_socket() {
    local i
    for i in $(seq 1 1200); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "burstd exited at start-up"; return 1; }
        sleep 0.05
    done
    echo "burstd did not create $1"
    return 1
}
# stop PID: SIGTERM, then the exit status must be 0.
stop() {
    kill -TERM "$1"
    local rc=0
    wait "$1" || rc=$?
    expect "exit status after SIGTERM" "$rc" 0
}
mode_of() { stat -c '%a' "$1"; }

for i in 1 2 3 4 5; do echo "line $i of the input"; done >"$D/in.txt"
tr a-z A-Z <"$D/in.txt" >"$D/upper.txt"

# ---- (a) the unit files --------------------------------------------------------

# Verifies a unit as installed, with ExecStart pointing at the built burstd
# (verify insists that the binary exists).  Warnings fail too: verify
# reports an unknown or misspelled setting only as a warning.
t_verify_system() {
    mkdir -p "$D/units"
    cp "$SYSTEMD_UNITS/burstd.service" "$SYSTEMD_UNITS/burstd.socket" "$D/units/"
    sed -i "s|^ExecStart=/usr/bin/burstd|ExecStart=$BURSTD|" "$D/units/burstd.service"
    grep -q "^ExecStart=$BURSTD " "$D/units/burstd.service" ||
        { echo "ExecStart=/usr/bin/burstd not found in burstd.service"; return 1; }
    local rc=0
    systemd-analyze verify --man=no "$D/units/burstd.socket" "$D/units/burstd.service" \
        >"$D/verify.out" 2>&1 || rc=$?
    cat "$D/verify.out"
    expect "systemd-analyze verify status" "$rc" 0 || return 1
    [ ! -s "$D/verify.out" ]
}

t_verify_user() {
    mkdir -p "$D/uunits" "$D/xdg"
    cp "$SYSTEMD_UNITS/burstd-user.service" "$D/uunits/burstd.service"
    sed -i "s|^ExecStart=/usr/local/bin/burstd|ExecStart=$BURSTD|" "$D/uunits/burstd.service"
    local rc=0
    XDG_RUNTIME_DIR=$D/xdg systemd-analyze --user verify --man=no \
        "$D/uunits/burstd.service" >"$D/verify.out" 2>&1 || rc=$?
    cat "$D/verify.out"
    expect "systemd-analyze --user verify status" "$rc" 0 || return 1
    [ ! -s "$D/verify.out" ]
}

# sysusers creates the burst group (the socket's) in a scratch root, then
# tmpfiles creates the state dir 0700, root's: burstd runs as root.
t_sysusers_tmpfiles() {
    local R=$D/root
    mkdir -p "$R/etc"
    systemd-sysusers --root="$R" "$SYSTEMD_UNITS/burst.sysusers" || return 1
    grep -q '^burst:' "$R/etc/group" || { echo "no burst group"; return 1; }
    if grep -q '^burst:' "$R/etc/passwd" 2>/dev/null; then
        echo "a burst user was created; burstd runs as root"
        return 1
    fi
    systemd-tmpfiles --root="$R" --create "$SYSTEMD_UNITS/burst.tmpfiles" || return 1
    expect "state dir mode and owner" "$(stat -c '%a %u' "$R/var/lib/burst")" "700 0"
}

if command -v systemd-analyze >/dev/null 2>&1; then
    run "systemd-analyze verify burstd.service and burstd.socket" t_verify_system
    run "systemd-analyze --user verify burstd-user.service" t_verify_user
else
    skip "systemd-analyze is not installed"
    skip "systemd-analyze is not installed"
fi
if [ "$(id -u)" = 0 ] && command -v systemd-sysusers >/dev/null 2>&1 &&
    command -v systemd-tmpfiles >/dev/null 2>&1; then
    run "sysusers.d and tmpfiles.d snippets create the group and a 0700 state dir" \
        t_sysusers_tmpfiles
else
    skip "systemd-sysusers/systemd-tmpfiles need root and must be installed"
fi

# ---- (b, c) socket activation and sd_notify -------------------------------------

# The launcher binds $D/act/burst.sock 0660 and passes it as fd 3; burstd
# gets no --socket and no XDG_RUNTIME_DIR, so the inherited socket is its
# only way to serve.  READY=1 must come from burstd's own pid.
t_activation() {
    local A=$D/act
    mkdir -p "$A/cred"
    echo not-a-real-key >"$A/cred/ibm-cloud-api-key"
    env -u XDG_RUNTIME_DIR CREDENTIALS_DIRECTORY="$A/cred" \
        "$ACTIVATE" --listen "$A/burst.sock" --mode 0660 --notify "$A/notify" \
        --log "$A/events" --pidfile "$A/pid" -- \
        "$BURSTD" --state-dir "$A/state" >"$A/burstd.log" 2>&1 &
    local launcher=$!
    PIDS+=("$launcher")
    wait_for "$A/events" ' READY=1$' "$launcher" || { cat "$A/burstd.log"; return 1; }
    local pid
    pid=$(cat "$A/pid")
    grep -qx "$pid READY=1" "$A/events" || { echo "READY=1 not from burstd ($pid)";
        cat "$A/events"; return 1; }
    grep -q "^$pid STATUS=" "$A/events" || { echo "no STATUS line"; return 1; }

    # A job through the inherited socket.
    local out job
    out=$(BURST_SOCKET=$A/burst.sock b map --exec 'tr a-z A-Z' --input-lines "$D/in.txt" \
        --wait) || { echo "map failed: $out"; cat "$A/burstd.log"; return 1; }
    job=$(head -n 1 <<<"$out")
    BURST_SOCKET=$A/burst.sock b results "$job" >"$A/got.txt" || return 1
    cmp "$A/got.txt" "$D/upper.txt" || return 1

    # Workers inherit neither the activation, notification and credential
    # variables, nor the listening socket itself.
    local ino
    ino=$(awk '/^listen / { print $2 }' "$A/events")
    [ -n "$ino" ] || { echo "launcher did not log the socket inode"; return 1; }
    printf 'x\n' >"$A/one.txt"
    out=$(BURST_SOCKET=$A/burst.sock b map --input-lines "$A/one.txt" --wait --exec \
        'echo "${NOTIFY_SOCKET-unset} ${LISTEN_PID-unset} ${LISTEN_FDS-unset} ${LISTEN_FDNAMES-unset} ${CREDENTIALS_DIRECTORY-unset}"; for f in /proc/$$/fd/*; do readlink "$f"; done; true') ||
        { echo "env job failed: $out"; return 1; }
    BURST_SOCKET=$A/burst.sock b results "$(head -n 1 <<<"$out")" >"$A/env.txt" || return 1
    expect "task environment" "$(head -n 1 "$A/env.txt")" "unset unset unset unset unset" ||
        return 1
    if grep -qxF "$ino" "$A/env.txt"; then
        echo "a task inherited the listening socket $ino:"
        cat "$A/env.txt"
        return 1
    fi

    # SIGTERM: STOPPING=1, exit 0, and the socket (systemd's, not ours) is
    # left where it was with the mode it had.
    kill -TERM "$pid"
    local rc=0
    wait "$launcher" || rc=$?
    expect "burstd exit status" "$rc" 0 || { cat "$A/burstd.log"; return 1; }
    grep -qx "$pid STOPPING=1" "$A/events" || { echo "no STOPPING=1"; cat "$A/events";
        return 1; }
    grep -qx "exit 0" "$A/events" || return 1
    [ -S "$A/burst.sock" ] || { echo "burstd removed the inherited socket's path"; return 1; }
    expect "inherited socket mode" "$(mode_of "$A/burst.sock")" 660
}
run "socket activation: burstd serves on the inherited fd 3; READY=1, STOPPING=1, exit 0" \
    t_activation

# LISTEN_PID of another process: the fds are not for us; burstd ignores them
# and creates its own --socket.  NOTIFY_SOCKET in the abstract namespace.
t_foreign_listen_pid() {
    local A=$D/foreign
    mkdir -p "$A"
    "$ACTIVATE" --listen "$A/other.sock" --wrong-pid --notify "@burst-test-$$-$RANDOM" \
        --log "$A/events" --pidfile "$A/pid" -- \
        "$BURSTD" --socket "$A/own.sock" --state-dir "$A/state" >"$A/burstd.log" 2>&1 &
    local launcher=$!
    PIDS+=("$launcher")
    wait_for "$A/events" ' READY=1$' "$launcher" || { cat "$A/burstd.log"; return 1; }
    [ -S "$A/own.sock" ] || { echo "burstd did not create its own socket"; return 1; }
    expect "own socket mode" "$(mode_of "$A/own.sock")" 600 || return 1
    BURST_SOCKET=$A/own.sock b jobs >/dev/null || return 1
    kill -TERM "$(cat "$A/pid")"
    local rc=0
    wait "$launcher" || rc=$?
    expect "burstd exit status" "$rc" 0 || return 1
    grep -q ' STOPPING=1$' "$A/events" || { echo "no STOPPING=1"; return 1; }
    [ ! -e "$A/own.sock" ] || { echo "burstd left its own socket behind"; return 1; }
}
run "a foreign LISTEN_PID is ignored; abstract NOTIFY_SOCKET works" t_foreign_listen_pid

# An inherited socket nobody listens on is a launcher's mistake: refuse it.
t_not_listening() {
    local A=$D/nolisten
    mkdir -p "$A"
    local rc=0
    timeout 120 "$ACTIVATE" --listen "$A/burst.sock" --no-listen --log "$A/events" -- \
        "$BURSTD" --state-dir "$A/state" >"$A/burstd.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || { echo "burstd started on a socket that is not listening"; return 1; }
    grep -q 'not listening' "$A/burstd.log" || { cat "$A/burstd.log"; return 1; }
}
run "an inherited socket that is not listening stops start-up with a clear error" \
    t_not_listening

# ---- (d) permissions ---------------------------------------------------------

# start_plain NAME [ARGS...]: burstd on $D/NAME/burst.sock, state
# $D/NAME/state; sets PID.
start_plain() {
    local A=$D/$1
    shift
    mkdir -p "$A"
    "$BURSTD" --socket "$A/burst.sock" --state-dir "$A/state" "$@" >"$A/burstd.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_socket "$A/burst.sock" "$PID" || { cat "$A/burstd.log"; return 1; }
}

t_default_modes() {
    start_plain modes || return 1
    expect "socket mode" "$(mode_of "$D/modes/burst.sock")" 600 || return 1
    expect "state dir mode" "$(mode_of "$D/modes/state")" 700 || return 1
    stop "$PID"
}
run "the socket is created 0600 and the state dir 0700" t_default_modes

t_state_dir_tightened() {
    mkdir -p "$D/loose/state"
    chmod 0755 "$D/loose/state"
    start_plain loose || return 1
    expect "state dir mode" "$(mode_of "$D/loose/state")" 700 || return 1
    stop "$PID"
}
run "an existing state dir with mode 0755 is set to 0700" t_state_dir_tightened

# A group to hand the socket to: 'daemon' as root (any group works), else
# one we belong to, preferably not our primary group so the change shows.
pick_group() {
    if [ "$(id -u)" = 0 ] && getent group daemon >/dev/null; then
        echo daemon
        return
    fi
    local g
    for g in $(id -Gn); do
        if [ "$g" != "$(id -gn)" ]; then
            echo "$g"
            return
        fi
    done
    id -gn
}

t_socket_group() {
    local g
    g=$(pick_group)
    mkdir -p "$D/group"
    printf 'socket_group = %s\n' "$g" >"$D/group/burstd.conf"
    start_plain group --config "$D/group/burstd.conf" || return 1
    expect "socket mode and group" "$(stat -c '%a %G' "$D/group/burst.sock")" "660 $g" ||
        return 1
    BURST_SOCKET=$D/group/burst.sock b jobs >/dev/null || return 1
    stop "$PID"
}
run "socket_group makes the socket 0660 and that group's" t_socket_group

t_socket_group_unknown() {
    mkdir -p "$D/nogroup"
    printf 'socket_group = no-such-group-%s\n' "$$" >"$D/nogroup/burstd.conf"
    local rc=0
    timeout 120 "$BURSTD" --socket "$D/nogroup/burst.sock" --state-dir "$D/nogroup/state" \
        --config "$D/nogroup/burstd.conf" >"$D/nogroup/burstd.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || { echo "burstd started"; return 1; }
    [ ! -e "$D/nogroup/burst.sock" ] || { echo "a socket was created"; return 1; }
    grep -q "no-such-group-$$" "$D/nogroup/burstd.log" || { cat "$D/nogroup/burstd.log";
        return 1; }
}
run "an unknown socket_group stops start-up and names the group" t_socket_group_unknown

# A state dir owned by someone else could be read or forged by its owner.
t_state_dir_foreign_owner() {
    mkdir -p "$D/foreign-owner/state"
    chown nobody "$D/foreign-owner/state"
    local rc=0
    timeout 120 "$BURSTD" --socket "$D/foreign-owner/burst.sock" \
        --state-dir "$D/foreign-owner/state" >"$D/foreign-owner/burstd.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || { echo "burstd started"; return 1; }
    [ ! -e "$D/foreign-owner/burst.sock" ] || { echo "a socket was created"; return 1; }
    [ ! -e "$D/foreign-owner/state/ledger.db" ] || { echo "a ledger was created"; return 1; }
    grep -q 'belongs to uid' "$D/foreign-owner/burstd.log" ||
        { cat "$D/foreign-owner/burstd.log"; return 1; }
}
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    run "a state dir owned by another uid is refused" t_state_dir_foreign_owner
else
    skip "a state dir owned by another uid needs root to create"
fi

echo "1..$n"
[ "$failed" -eq 0 ]
