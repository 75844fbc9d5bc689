#!/usr/bin/env bash
# scripts/postgres.sh start|stop|url NAME PORT
#
# A throwaway PostgreSQL cluster under ./var/NAME, listening on 127.0.0.1:PORT with
# trust auth. `start` is idempotent: initdb when absent, start when stopped, create the
# database `berth` when missing; it prints the URL (and nothing else) on stdout.
# When DATABASE_URL is set, `start` and `url` print it and touch nothing.
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
# user and every server command runs through runuser.
#
# Environment:
#   DATABASE_URL        use this server instead of starting one
#   PG_SETTINGS   extra server settings, space-separated key=value (e.g. fsync=off)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { die "usage: scripts/postgres.sh start|stop|url NAME PORT"; }
[ $# -eq 3 ] || usage
cmd="$1" name="$2" port="$3"
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad cluster name: $name"
[[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"

pg_bin() {
    local bin
    bin="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [ -x "$bin/pg_ctl" ] ||
        die "PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/deps.sh)"
    printf '%s\n' "$bin"
}

# Run a server command as the cluster's owner, from / so a cwd the postgres user
# cannot read (a clone under /root, say) does not matter.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Where the cluster lives. Normally ./var/NAME; as root, when the postgres user cannot
# reach ./var (a clone under a private home), the cluster goes to /tmp and ./var/NAME
# is a symlink to it, so the server never has to traverse the private directory.
data_dir() {
    local link="$VAR/$name" fallback
    if [ -L "$link" ]; then
        readlink -m "$link"
    elif [ -d "$link" ] || [ "$(id -u)" -ne 0 ] || as_owner test -x "$VAR"; then
        printf '%s\n' "$link"
    else
        fallback="/tmp/berth-pg-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)/$name"
        mkdir -p "$fallback"
        ln -sfn "$fallback" "$link"
        printf '%s\n' "$fallback"
    fi
}

url_for() { printf 'postgres://postgres@127.0.0.1:%s/berth\n' "$1"; }

running() { as_owner "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }

# The port a running cluster really listens on (4th line of postmaster.pid).
running_port() { sed -n 4p "$DIR/postmaster.pid"; }

psql_admin() {
    "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"
}

start() {
    local log opts kv sockdir actual
    if ! { [ -s "$DIR/PG_VERSION" ] && running; } && port_open "$port"; then
        die "127.0.0.1:$port is taken by another process; stop it or pick another port"
    fi
    if [ ! -s "$DIR/PG_VERSION" ]; then
        note "initdb $DIR"
        mkdir -p "$DIR"
        [ "$(id -u)" -ne 0 ] || chown postgres: "$DIR"
        chmod 700 "$DIR"
        as_owner "$BIN/initdb" -D "$DIR" -U postgres -A trust -E UTF8 --no-locale >"$DIR.initdb.log" 2>&1 ||
            { cat "$DIR.initdb.log" >&2; die "initdb failed"; }
    fi

    # The log sits beside the data directory, owned by the server's user.
    log="$(dirname "$DIR")/$name.log"
    touch "$log"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$log"
    [ "$log" = "$VAR/$name.log" ] || ln -sfn "$log" "$VAR/$name.log"

    if running; then
        actual="$(running_port)"
        [ "$actual" = "$port" ] || note "$name already runs on port $actual (not $port)"
        port="$actual"
    else
        # A socket path is limited to ~107 bytes; a deep checkout goes TCP-only.
        sockdir="$DIR"
        [ $(( ${#DIR} + 20 )) -lt 107 ] || sockdir=""
        # pg_ctl hands -o to a shell: quote each setting.
        opts="-c listen_addresses=127.0.0.1 -c port=$port -c 'unix_socket_directories=$sockdir'"
        for kv in ${PG_SETTINGS:-}; do opts+=" -c '$kv'"; done
        note "starting PostgreSQL $name on 127.0.0.1:$port (log: $VAR/$name.log)"
        as_owner "$BIN/pg_ctl" -D "$DIR" -l "$log" -w -t 60 -o "$opts" start >/dev/null ||
            { tail -n 30 "$log" >&2; die "PostgreSQL $name did not start"; }
    fi

    if [ -z "$(psql_admin "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = 'berth'")" ]; then
        psql_admin "$port" -c "CREATE DATABASE berth"
    fi
    url_for "$port"
}

stop() {
    if [ -s "$DIR/PG_VERSION" ] && running; then
        as_owner "$BIN/pg_ctl" -D "$DIR" -m fast -w -t 60 stop >/dev/null
        note "PostgreSQL $name: stopped"
    else
        note "PostgreSQL $name: not running"
    fi
}

case "$cmd" in
    start | url)
        if [ -n "${DATABASE_URL:-}" ]; then
            printf '%s\n' "$DATABASE_URL"
            exit 0
        fi
        mkdir -p "$VAR"
        BIN="$(pg_bin)"
        DIR="$(data_dir)"
        if [ "$cmd" = start ]; then
            start
        elif [ -s "$DIR/PG_VERSION" ] && running; then
            url_for "$(running_port)"
        else
            url_for "$port"
        fi
        ;;
    stop)
        [ -e "$VAR/$name" ] || { note "PostgreSQL $name: not running"; exit 0; }
        BIN="$(pg_bin)"
        DIR="$(data_dir)"
        stop
        ;;
    *) usage ;;
esac
