#!/usr/bin/env bash
# scripts/bench-pipeline.sh [--quick] [--report FILE]: the event pipeline benchmark
# (issue 5). scripts/bench.sh runs it last (BENCH_PIPELINE=0 skips it); it also runs
# alone.
#
# Builds berth-gateway, berth-workers and loadtest (release), starts a fresh nats-server
# (JetStream store under ./var/bench/pipeline), a fresh database and berth-gateway (auth
# off), each on a free port, and measures with `loadtest pipeline`:
#   (a) outbox → JetStream: N outbox rows inserted while no worker runs, then one
#       `berth-workers relay`, timed until the outbox is empty and BERTH_EVENTS holds
#       the N events. Peer, same run and server: the load generator publishing the same
#       payloads to JetStream itself (a stream with BERTH_EVENTS's settings, Nats-Msg-Id
#       set, batches of the relay's size, acks awaited per batch). BERTH_EVENTS is
#       purged afterwards so the echo event consumer never sees the bench events.
#   (b) push → handler latency at a steady 100 pushes/s with one `berth-workers echo`.
#   (c) stop request → last of 4 in-flight tasks stopped (500 queued behind them),
#       3 times, one worker of concurrency 4.
#   (d) tasks/s of one execution of 50 ms echo tasks with 1, 2 and 3 worker processes
#       (concurrency 4 and max_ack_pending 64 each); peer: N × the 1-process rate.
# One JSON line per figure goes to ./var/bench/pipeline/results.jsonl; the markdown
# table to ./var/bench/pipeline/report.md, and with --report FILE it is appended to
# FILE too. A figure that fails is reported and the others still run; the exit status
# is 1 if any failed. Server logs stay in ./var/bench/pipeline; the NATS store and blob
# data are deleted at the end.
#
#   --quick   fewer events, a shorter latency run and fewer tasks (a smoke run)
#
# Environment (defaults in brackets):
#   DATABASE_URL            PostgreSQL server to create the bench database on
#                           [scripts/postgres.sh start bench-postgres 54331]
#   BENCH_PIPELINE_EVENTS   outbox rows for (a) [50000; --quick 10000]
#   BENCH_PIPELINE_SECS     length of (b) [20; --quick 10]
#   BENCH_PIPELINE_TASKS    tasks per run of (d) [2000; --quick 600]
#   BENCH_SKIP_BUILD        1: use the binaries already in target/release [0]
#   BENCH_KEEP              1: keep the NATS store and gateway data afterwards [0]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0
REPORT_TO=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --report)
            [ $# -ge 2 ] || die "--report needs a file"
            REPORT_TO="$2"
            shift
            ;;
        *) die "usage: scripts/bench-pipeline.sh [--quick] [--report FILE]" ;;
    esac
    shift
done

DIR="$VAR/bench/pipeline"
PG_NAME=bench-postgres
PG_PORT=54331
if [ "$QUICK" = 1 ]; then
    EVENTS="${BENCH_PIPELINE_EVENTS:-10000}"
    SECS="${BENCH_PIPELINE_SECS:-10}"
    TASKS="${BENCH_PIPELINE_TASKS:-600}"
else
    EVENTS="${BENCH_PIPELINE_EVENTS:-50000}"
    SECS="${BENCH_PIPELINE_SECS:-20}"
    TASKS="${BENCH_PIPELINE_TASKS:-2000}"
fi
for v in EVENTS SECS TASKS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PIPELINE_$v must be a positive whole number, got '${!v}'"
done
# The relay's batch size, given to the relay and to its raw peer alike.
BATCH=500
CONCURRENCY=4
MAX_ACK_PENDING=64

NATS_PID="" GW_PID="" DB_NAME="" ADMIN_URL="" PG_STARTED=0
WORKER_PIDS=()
FAILED=()

# ------------------------------------------------------------------ cleanup

stop_workers() {
    local pid
    for pid in "${WORKER_PIDS[@]}"; do
        stop_pid "$pid" "berth-workers (pid $pid)" 30
    done
    WORKER_PIDS=()
}

cleanup() {
    stop_workers
    stop_pid "$GW_PID" berth-gateway 15
    stop_pid "$NATS_PID" nats-server 15
    GW_PID="" NATS_PID=""
    if [ -n "$DB_NAME" ] && [ -n "$ADMIN_URL" ]; then
        psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 ||
            note "could not drop database $DB_NAME"
        DB_NAME=""
    fi
    if [ "$PG_STARTED" = 1 ]; then
        "$ROOT/scripts/postgres.sh" stop "$PG_NAME" "$PG_PORT" >/dev/null 2>&1 || true
        PG_STARTED=0
    fi
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$DIR/nats" "$DIR/berth"
    fi
}
at_exit cleanup
trap 'exit 130' INT TERM

# free_port FROM: the first port from FROM up that nothing listens on.
free_port() {
    local p
    for ((p = $1; p < $1 + 100; p++)); do
        port_open "$p" || { echo "$p"; return 0; }
    done
    die "no free port in $1-$(($1 + 99))"
}

# ------------------------------------------------------------------ setup

step "dependencies"
for tool in curl psql nats-server; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (see scripts/deps.sh)"
done

BIN="$(target_dir)/release"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    step "build (release): berth-gateway, berth-workers, loadtest"
    # The committed .sqlx/ data, not whatever DATABASE_URL points at, checks the queries.
    SQLX_OFFLINE=true cargo build --release -p berth-gateway -p berth-workers -p berth-loadtest
fi
LT="$BIN/loadtest"
for b in "$LT" "$BIN/berth-gateway" "$BIN/berth-workers"; do
    [ -x "$b" ] || die "missing $b"
done

step "fresh ./var/bench/pipeline"
rm -rf "$DIR"
mkdir -p "$DIR/nats" "$DIR/berth"
RESULTS="$DIR/results.jsonl"
: >"$RESULTS"

step "PostgreSQL"
if [ -z "${DATABASE_URL:-}" ] && ! port_open "$PG_PORT"; then
    PG_STARTED=1
fi
ADMIN_URL="$("$ROOT/scripts/postgres.sh" start "$PG_NAME" "$PG_PORT" | tail -n 1)"
[ -n "$ADMIN_URL" ] || die "scripts/postgres.sh printed no URL"
DB_NAME="berth_pipeline_$(date +%Y%m%d%H%M%S)_$$"
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null ||
    die "cannot create database $DB_NAME on $(db_url_with_name "$ADMIN_URL" postgres)"
DB_URL="$(db_url_with_name "$ADMIN_URL" "$DB_NAME")"
note "database $DB_NAME"

NATS_PORT="$(free_port 54250)"
step "nats-server with JetStream on 127.0.0.1:$NATS_PORT"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/nats" >"$DIR/nats.log" 2>&1 &
NATS_PID=$!
NATS_URL="nats://127.0.0.1:$NATS_PORT"
for ((i = 0; i < 100; i++)); do
    kill -0 "$NATS_PID" 2>/dev/null || { tail -n 20 "$DIR/nats.log" >&2; die "nats-server exited during startup"; }
    port_open "$NATS_PORT" && break
    sleep 0.1
done
port_open "$NATS_PORT" || die "nats-server did not listen on 127.0.0.1:$NATS_PORT within 10 s"

GW_PORT="$(free_port 5012)"
GW_URL="http://127.0.0.1:$GW_PORT"
step "berth-gateway on 127.0.0.1:$GW_PORT (auth off)"
BERTH_LISTEN="127.0.0.1:$GW_PORT" BERTH_DATA_DIR="$DIR/berth" BERTH_DATABASE_URL="$DB_URL" \
    BERTH_AUTH__MODE=none BERTH_PROJECTS__CREATE_ON_PUSH=true BERTH_NATS_URL="$NATS_URL" \
    RUST_LOG="${RUST_LOG:-warn}" "$BIN/berth-gateway" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
for ((i = 0; i < 600; i++)); do
    kill -0 "$GW_PID" 2>/dev/null || { tail -n 40 "$DIR/gateway.log" >&2; die "berth-gateway exited during startup"; }
    [ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$GW_URL/v2/" 2>/dev/null || true)" = 200 ] && break
    sleep 0.1
done
[ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$GW_URL/v2/" 2>/dev/null || true)" = 200 ] ||
    die "berth-gateway did not answer 200 on $GW_URL/v2/ within 60 s"
note "berth-gateway ready (pid $GW_PID)"

# What every berth-workers process gets (the relay of (a) included). The loadtest reads
# the database URL from LOADTEST_DATABASE_URL, never from its command line.
export BERTH_DATABASE_URL="$DB_URL" BERTH_NATS_URL="$NATS_URL"
export BERTH_PIPELINE__CONSUMER__CONCURRENCY="$CONCURRENCY"
export BERTH_PIPELINE__CONSUMER__MAX_ACK_PENDING="$MAX_ACK_PENDING"
export BERTH_PIPELINE__CONSUMER__ACK_WAIT_SECS=30
export BERTH_PIPELINE__RELAY__BATCH_SIZE="$BATCH"
export LOADTEST_DATABASE_URL="$DB_URL"
export RUST_LOG="${RUST_LOG:-warn}"

# start_worker: one more `berth-workers echo`, waited for until it has registered
# (a worker_processes row with its pid) so no measurement times its start-up.
start_worker() {
    local n=$((${#WORKER_PIDS[@]} + 1)) pid i seen=0
    "$BIN/berth-workers" echo >"$DIR/workers-$n.log" 2>&1 &
    pid=$!
    WORKER_PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$DIR/workers-$n.log" >&2; die "berth-workers echo #$n exited during startup"; }
        seen="$(psql "$DB_URL" -X -tA -c "SELECT count(*) FROM worker_processes WHERE pid = $pid" 2>/dev/null || echo 0)"
        [ "$seen" -ge 1 ] 2>/dev/null && break
        sleep 0.1
    done
    if [ "$seen" -ge 1 ] 2>/dev/null; then
        note "berth-workers echo #$n ready (pid $pid)"
    else
        note "berth-workers echo #$n (pid $pid) has not registered after 30 s; going on"
    fi
}

# figure NAME ARGS…: `loadtest pipeline ARGS… --json`, its JSON line appended to the
# results; a failure is recorded, not fatal.
figure() {
    local name="$1"
    shift
    if ! "$LT" pipeline "$@" --json >>"$RESULTS"; then
        FAILED+=("$name")
        note "FAILED: $name"
    fi
    kill -0 "$GW_PID" 2>/dev/null || die "berth-gateway has died; see $DIR/gateway.log"
    kill -0 "$NATS_PID" 2>/dev/null || die "nats-server has died; see $DIR/nats.log"
}

# ------------------------------------------------------------------ figures

step "(a) outbox → JetStream: $EVENTS events, one relay; peer: raw JetStream publish"
figure "outbox relay" relay --nats-url "$NATS_URL" --workers-bin "$BIN/berth-workers" \
    --count "$EVENTS" --batch "$BATCH" --log "$DIR/relay.log"

step "one berth-workers echo (concurrency $CONCURRENCY)"
start_worker

step "(b) push → handler latency: 100 pushes/s for $SECS s"
figure "push latency" latency --nats-url "$NATS_URL" --target "$GW_URL" \
    --rate 100 --duration-secs "$SECS"

step "(c) cancel: 4 in-flight tasks, 500 queued, 3 times"
figure "cancel" cancel --nats-url "$NATS_URL" --target "$GW_URL" \
    --repeat 3 --blocked "$CONCURRENCY" --queued 500

for n in 1 2 3; do
    while [ "${#WORKER_PIDS[@]}" -lt "$n" ]; do
        step "one more berth-workers echo"
        start_worker
    done
    step "(d) $TASKS tasks of 50 ms with $n worker process(es)"
    figure "scale with $n process(es)" scale --nats-url "$NATS_URL" --target "$GW_URL" \
        --processes "$n" --concurrency "$CONCURRENCY" --tasks "$TASKS" --sleep-ms 50
done
stop_workers

# ------------------------------------------------------------------ report

step "report"
how="scripts/bench-pipeline.sh"
[ "$QUICK" = 0 ] || how="$how --quick (a smoke run: fewer events, tasks and seconds)"
notes=(--note "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); Berth $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no commit)'), $(nats-server --version 2>/dev/null | head -n 1), PostgreSQL $(psql "$DB_URL" -X -tA -c 'SHOW server_version' 2>/dev/null || echo '?'), all on this machine. Generated $(date -u '+%Y-%m-%d %H:%M UTC') by $how.")
if [ "${#FAILED[@]}" -gt 0 ]; then
    notes+=(--note "FAILED figures (no result): $(printf '%s; ' "${FAILED[@]}")see the output above and ./var/bench/pipeline/*.log.")
fi
{
    printf '## Event pipeline\n\n'
    "$LT" pipeline report --results "$RESULTS" "${notes[@]}"
} >"$DIR/report.md"
if [ -n "$REPORT_TO" ]; then
    { printf '\n'; cat "$DIR/report.md"; } >>"$REPORT_TO"
fi
printf '\n'
cat "$DIR/report.md"
printf '\n(written to ./var/bench/pipeline/report.md%s)\n' "${REPORT_TO:+ and appended to $REPORT_TO}"
if [ "${#FAILED[@]}" -gt 0 ]; then
    STEP="event pipeline figures: ${#FAILED[@]} failed ($(printf '%s; ' "${FAILED[@]}" | sed 's/; $//'))"
    exit 1
fi
