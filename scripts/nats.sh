#!/usr/bin/env bash
# scripts/nats.sh start|stop|url
#
# A local NATS server with JetStream for development: 127.0.0.1:$DEV_NATS_PORT
# (default 54222), JetStream data in ./var/nats/jetstream, pid in ./var/nats/nats.pid,
# log in ./var/nats.log. `start` is idempotent and prints the URL (and nothing else) on
# stdout. When NATS_URL is set, `start` and `url` print it and touch nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: scripts/nats.sh start|stop|url"
port="${DEV_NATS_PORT:-54222}"
dir="$VAR/nats"
pidfile="$dir/nats.pid"
log="$VAR/nats.log"
url="nats://127.0.0.1:$port"

start() {
    local i
    if pid_alive "$pidfile" nats-server; then
        printf '%s\n' "$url"
        return 0
    fi
    command -v nats-server >/dev/null || die "nats-server not found (run scripts/deps.sh)"
    port_open "$port" && die "127.0.0.1:$port is taken by another process; set DEV_NATS_PORT"
    mkdir -p "$dir/jetstream"
    note "starting NATS on 127.0.0.1:$port (log: $log)"
    # setsid: the server outlives the make or shell that started it.
    setsid nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/jetstream" -P "$pidfile" \
        </dev/null >>"$log" 2>&1 &
    for ((i = 0; i < 100; i++)); do
        if port_open "$port" && pid_alive "$pidfile" nats-server; then
            printf '%s\n' "$url"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$log" >&2
    die "NATS did not start within 10s"
}

case "$1" in
    start | url)
        if [ -n "${NATS_URL:-}" ]; then
            printf '%s\n' "$NATS_URL"
        elif [ "$1" = start ]; then
            start
        else
            printf '%s\n' "$url"
        fi
        ;;
    stop) stop_pidfile "$pidfile" nats-server ;;
    *) die "usage: scripts/nats.sh start|stop|url" ;;
esac
