# shellcheck shell=bash
# Shared helpers for Berth's scripts; sourced, never run. Sets ROOT and VAR and
# moves to the repository root so every relative path below means the same thing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
VAR="$ROOT/var"
cd "$ROOT" || exit 1

# nats-server lives in /usr/sbin, cargo in ~/.cargo/bin: neither is on every PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
if [ -d "${CARGO_HOME:-$HOME/.cargo}/bin" ]; then
    case ":$PATH:" in *":${CARGO_HOME:-$HOME/.cargo}/bin:"*) ;; *) PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH" ;; esac
fi
export PATH

# One visible line per step, so a failing `make test` shows where it stopped.
step() { STEP="$*"; printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# at_exit COMMAND: run COMMAND (a string for eval) when the script exits, after telling
# which step failed if it exits non-zero. `at_exit :` just turns that report on.
AT_EXIT=()
at_exit() {
    AT_EXIT+=("$1")
    trap _run_at_exit EXIT
}
_run_at_exit() {
    local rc=$? cmd
    if [ "$rc" -ne 0 ] && [ -n "${STEP:-}" ]; then
        printf '\nFAILED (exit %s) at step: %s\n' "$rc" "$STEP" >&2
    fi
    for cmd in "${AT_EXIT[@]}"; do eval "$cmd" || true; done
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The target directory cargo uses (CARGO_TARGET_DIR when set).
target_dir() {
    printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}"
}

# db_url_with_name URL NAME: URL with its database (path) replaced by NAME, keeping
# credentials, host, port and query string. Used to derive per-purpose databases
# (berth_sqlx, berth_sqlx_check) from whatever server DATABASE_URL points at.
db_url_with_name() {
    local url="$1" name="$2" query="" scheme rest authority
    case "$url" in
        *\?*) query="?${url#*\?}"; url="${url%%\?*}" ;;
    esac
    case "$url" in
        *://*) scheme="${url%%://*}"; rest="${url#*://}" ;;
        *) die "not a database URL: $1" ;;
    esac
    authority="${rest%%/*}"
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$name" "$query"
}

# Is something accepting TCP connections on 127.0.0.1:PORT?
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive PIDFILE [PROGRAM]: the pid file names a live process, running PROGRAM
# when given (so a pid reused after a reboot is never mistaken for ours).
pid_alive() {
    local pid cmdline
    [ -s "$1" ] || return 1
    pid="$(head -n 1 "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [ -z "${2:-}" ] && return 0
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *"$2"* ]]
}

# stop_pid PID NAME [SECONDS]: SIGTERM the process, wait up to SECONDS (default 30),
# SIGKILL as a last resort. A pid that is empty or not running is left alone.
stop_pid() {
    local pid="$1" name="$2" wait="${3:-30}" i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        note "$name (pid $pid) ignored SIGTERM for ${wait}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Reaps it when it is this shell's child; harmless otherwise.
    wait "$pid" 2>/dev/null || true
}

# stop_pidfile PIDFILE PROGRAM [SECONDS]: stop_pid on the process PIDFILE names if it
# runs PROGRAM, then remove the pid file.
stop_pidfile() {
    local pidfile="$1" name="$2" wait="${3:-30}" pid
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        note "$name: not running"
        return 0
    fi
    pid="$(head -n 1 "$pidfile")"
    stop_pid "$pid" "$name" "$wait"
    rm -f "$pidfile"
    note "$name: stopped (pid $pid)"
}

# use_test_postgres: export DATABASE_URL for the test suite. A set DATABASE_URL is used
# as it is; otherwise the throwaway cluster ./var/test-postgres is started (tuned for
# speed, not durability) and stopped again when the calling script exits, unless it
# was already running or KEEP_TEST_PG=1. Its port is TEST_PG_PORT, else the first free
# one from 54330 up, so a stray cluster from another checkout is no obstacle.
# (Script knobs never start with BERTH_: that prefix is the gateway's configuration,
# which refuses keys it does not know.)
use_test_postgres() {
    local port dir="$VAR/test-postgres"
    step "PostgreSQL for tests"
    if [ -n "${DATABASE_URL:-}" ]; then
        note "using DATABASE_URL (an existing server; nothing started)"
        export DATABASE_URL
        return 0
    fi
    if [ -s "$dir/postmaster.pid" ]; then
        port="$(sed -n 4p "$dir/postmaster.pid")"
        KEEP_TEST_PG=1
    else
        port="${TEST_PG_PORT:-}"
        if [ -z "$port" ]; then
            for port in $(seq 54330 54339) none; do
                port_open "$port" || break
            done
            [ "$port" != none ] || die "ports 54330-54339 are all taken; set TEST_PG_PORT"
        fi
    fi
    DATABASE_URL="$(PG_SETTINGS="fsync=off synchronous_commit=off full_page_writes=off max_connections=300" \
        "$ROOT/scripts/postgres.sh" start test-postgres "$port")"
    export DATABASE_URL
    note "DATABASE_URL=$DATABASE_URL"
    if [ "${KEEP_TEST_PG:-0}" != 1 ]; then
        at_exit "\"\$ROOT/scripts/postgres.sh\" stop test-postgres $port >/dev/null 2>&1"
    fi
}

# fresh_database URL: drop, create and migrate the database URL names, so it matches
# migrations/ exactly even while an unreleased migration is being edited.
fresh_database() {
    DATABASE_URL="$1" cargo sqlx database drop -y >/dev/null
    DATABASE_URL="$1" cargo sqlx database create
    DATABASE_URL="$1" cargo sqlx migrate run --source migrations
}
