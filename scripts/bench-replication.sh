#!/usr/bin/env bash
# scripts/bench-replication.sh [--quick] [--report FILE]: the replication benchmark
# (issue 6). scripts/bench.sh runs it after the event pipeline benchmark
# (BENCH_REPLICATION=0 skips it); it also runs alone.
#
# Builds berth-gateway, berth-workers and loadtest (release), starts a fresh database,
# nats-server (JetStream store under ./var/bench/replication) and berth-gateway with
# token auth (the administrator's password random per run), each on a free port, and
# Debian's docker-registry as the destination (plain HTTP, no auth, a fresh storage
# directory for every figure). Through the API it creates the project `replbench`, the
# destination as a registry endpoint (no rate limit, max_concurrency 0 = unlimited) and
# an event-based push policy for `replbench/**`. Then, with `loadtest replication`:
#   (a) burst: N images (config + 3 × 256 KiB layers; every other one shares one base
#       layer, the rest is unique) pushed into replbench/r0…r19, 16 at a time, with one
#       `berth-workers replicate` process; the time from the first push until the
#       destination answers HEAD of every manifest with its digest.
#   (b) peer: the same N images copied Berth → a fresh docker-registry by `skopeo copy`,
#       8 processes at a time (no worker runs meanwhile).
#   (c) burst again (new images) with two worker processes.
#   (d) steady state: 10 pushes/s with one worker; per image, push done → at the
#       destination (watched every 20 ms); p50/p99.
# Every worker process runs with replicate concurrency 8. The destination is watched
# through its tags lists (one per repository with images outstanding, per pass) and a
# HEAD of each newly listed manifest, which must answer the pushed digest. With the
# database the loadtest also splits each image's time into stages (push → execution →
# task start → task end → seen) and sums the tasks' blobs skipped/mounted/uploaded; and
# this script adds the CPU seconds each process used during each figure to the notes.
# One JSON line per figure goes to ./var/bench/replication/results.jsonl, the markdown
# table to ./var/bench/replication/report.md, and with --report FILE it is appended to
# FILE too.
# A figure that fails is reported and the others still run; the exit status is 1 if any
# failed. Logs stay in ./var/bench/replication; blob data and the NATS store are
# deleted at the end.
#
#   --quick   200 images and a 20 s steady state (a smoke run); also BENCH_QUICK=1
#
# Environment (defaults in brackets):
#   DATABASE_URL                        PostgreSQL server to create the bench database on
#                                       [scripts/postgres.sh start bench-postgres 54331]
#   BENCH_REPLICATION_IMAGES            images per burst [2000; --quick 200]
#   BENCH_REPLICATION_REPOS             repositories they are spread over [20]
#   BENCH_REPLICATION_PUSH_CONCURRENCY  pushes in flight during a burst [16]
#   BENCH_REPLICATION_CONCURRENCY       replicate tasks at once per worker process [8]
#   BENCH_REPLICATION_SKOPEO_PARALLEL   skopeo processes at once [8]
#   BENCH_REPLICATION_RATE              steady-state pushes per second [10]
#   BENCH_REPLICATION_SECS              length of the steady state [60; --quick 20]
#   BENCH_REPLICATION_PROCESSES         worker-process counts of the bursts [1 2]
#   BENCH_REPLICATION_REGISTRY_LOG      docker-registry's log level; info logs every
#                                       request with its duration [warn]
#   BENCH_SKIP_BUILD                    1: use the binaries already in target/release [0]
#   BENCH_KEEP                          1: keep the NATS store, gateway and registry data
#                                       and the database (its tasks' rows and logs) [0]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK="${BENCH_QUICK:-0}"
REPORT_TO=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --report)
            [ $# -ge 2 ] || die "--report needs a file"
            REPORT_TO="$2"
            shift
            ;;
        *) die "usage: scripts/bench-replication.sh [--quick] [--report FILE]" ;;
    esac
    shift
done

DIR="$VAR/bench/replication"
PG_NAME=bench-postgres
PG_PORT=54331
if [ "$QUICK" = 1 ]; then
    IMAGES="${BENCH_REPLICATION_IMAGES:-200}"
    SECS="${BENCH_REPLICATION_SECS:-20}"
else
    IMAGES="${BENCH_REPLICATION_IMAGES:-2000}"
    SECS="${BENCH_REPLICATION_SECS:-60}"
fi
REPOS="${BENCH_REPLICATION_REPOS:-20}"
PUSH_CONCURRENCY="${BENCH_REPLICATION_PUSH_CONCURRENCY:-16}"
CONCURRENCY="${BENCH_REPLICATION_CONCURRENCY:-8}"
SKOPEO_PARALLEL="${BENCH_REPLICATION_SKOPEO_PARALLEL:-8}"
RATE="${BENCH_REPLICATION_RATE:-10}"
PROCESSES="${BENCH_REPLICATION_PROCESSES:-1 2}"
for v in IMAGES SECS REPOS PUSH_CONCURRENCY CONCURRENCY SKOPEO_PARALLEL RATE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPLICATION_$v must be a positive whole number, got '${!v}'"
done
for n in $PROCESSES; do
    [[ "$n" =~ ^[1-8]$ ]] || die "BENCH_REPLICATION_PROCESSES: each count must be 1 to 8, got '$n'"
done
PROJECT=replbench

NATS_PID="" GW_PID="" REG_PID="" DB_NAME="" ADMIN_URL="" PG_STARTED=0
WORKER_PIDS=()
FAILED=()

# ------------------------------------------------------------------ cleanup

stop_workers() {
    local pid
    for pid in "${WORKER_PIDS[@]}"; do
        stop_pid "$pid" "berth-workers replicate (pid $pid)" 30
    done
    WORKER_PIDS=()
}

cleanup() {
    stop_workers
    stop_pid "$GW_PID" berth-gateway 15
    stop_pid "$REG_PID" docker-registry 15
    stop_pid "$NATS_PID" nats-server 15
    GW_PID="" REG_PID="" NATS_PID=""
    if [ "${BENCH_KEEP:-0}" = 1 ] && [ -n "$DB_NAME" ]; then
        note "kept database $DB_NAME (BENCH_KEEP=1); drop it when done"
    elif [ -n "$DB_NAME" ] && [ -n "$ADMIN_URL" ]; then
        psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 ||
            note "could not drop database $DB_NAME"
        DB_NAME=""
    fi
    if [ "$PG_STARTED" = 1 ]; then
        "$ROOT/scripts/postgres.sh" stop "$PG_NAME" "$PG_PORT" >/dev/null 2>&1 || true
        PG_STARTED=0
    fi
    rm -f "$DIR/curl.cfg"
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$DIR/nats" "$DIR/berth" "$DIR/registry"
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

# wait_v2 URL PID NAME LOG STATUS: until GET URL/v2/ answers STATUS, 60 s at most.
wait_v2() {
    local url="$1" pid="$2" name="$3" log="$4" want="$5" i status
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2 || true
            die "$name exited during startup (log: $log)"
        fi
        status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$url/v2/" 2>/dev/null || true)"
        if [ "$status" = "$want" ]; then
            note "$name ready at $url (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 40 "$log" >&2 || true
    die "$name did not answer $want at $url/v2/ within 60 s"
}

# ------------------------------------------------------------------ setup

step "dependencies"
for tool in curl psql openssl nats-server docker-registry skopeo; do
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
workers_help="$("$BIN/berth-workers" --help 2>&1 || true)"
grep -q '^ *replicate ' <<<"$workers_help" ||
    die "$BIN/berth-workers has no replicate kind (see berth-workers --help)"

step "fresh ./var/bench/replication"
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
DB_NAME="berth_replication_$(date +%Y%m%d%H%M%S)_$$"
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null ||
    die "cannot create database $DB_NAME on $(db_url_with_name "$ADMIN_URL" postgres)"
DB_URL="$(db_url_with_name "$ADMIN_URL" "$DB_NAME")"
note "database $DB_NAME"

NATS_PORT="$(free_port 54260)"
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

REG_PORT="$(free_port 5022)"
DEST_URL="http://127.0.0.1:$REG_PORT"

# fresh_registry NAME: docker-registry on REG_PORT again, over an empty storage
# directory (the previous one is stopped and deleted); its log is registry-NAME.log.
fresh_registry() {
    stop_pid "$REG_PID" docker-registry 15
    REG_PID=""
    rm -rf "$DIR/registry"
    mkdir -p "$DIR/registry"
    cat >"$DIR/registry.yml" <<EOF
version: 0.1
log:
  level: ${BENCH_REPLICATION_REGISTRY_LOG:-warn}
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REG_PORT
EOF
    docker-registry serve "$DIR/registry.yml" >"$DIR/registry-$1.log" 2>&1 &
    REG_PID=$!
    wait_v2 "$DEST_URL" "$REG_PID" "docker-registry ($1)" "$DIR/registry-$1.log" 200
}

step "docker-registry (the destination) on 127.0.0.1:$REG_PORT"
fresh_registry setup

GW_PORT="$(free_port 5032)"
GW_URL="http://127.0.0.1:$GW_PORT"
# "Bb1-" meets the administrator password rule (upper case, lower case, a digit). The
# load generator reads it from LOADTEST_PASSWORD, curl from a file: never argv.
LOADTEST_PASSWORD="Bb1-$(openssl rand -hex 16)"
export LOADTEST_PASSWORD
step "berth-gateway on 127.0.0.1:$GW_PORT (token auth)"
BERTH_LISTEN="127.0.0.1:$GW_PORT" BERTH_DATA_DIR="$DIR/berth" BERTH_DATABASE_URL="$DB_URL" \
    BERTH_AUTH__MODE=token BERTH_AUTH__ADMIN_PASSWORD="$LOADTEST_PASSWORD" \
    BERTH_PROJECTS__CREATE_ON_PUSH=true BERTH_NATS_URL="$NATS_URL" \
    RUST_LOG="${RUST_LOG:-warn}" "$BIN/berth-gateway" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
wait_v2 "$GW_URL" "$GW_PID" berth-gateway "$DIR/gateway.log" 401
for f in secret.key auth/token-key.pem; do
    [ -s "$DIR/berth/$f" ] || die "berth-gateway did not write $DIR/berth/$f"
done

# api METHOD PATH [JSON]: one request to the gateway's API as the administrator;
# prints the Location header (empty when none). Fails on any status but 2xx.
(umask 077 && printf 'user = "admin:%s"\n' "$LOADTEST_PASSWORD" >"$DIR/curl.cfg")
api() {
    local method="$1" path="$2" body="${3:-}" out status
    out="$(mktemp)"
    status="$(curl -sS -K "$DIR/curl.cfg" -X "$method" -o "$out" -D "$out.h" -w '%{http_code}' \
        -H 'content-type: application/json' ${body:+--data "$body"} "$GW_URL/api/v2.0$path")" || status=000
    if [[ "$status" != 2* ]]; then
        note "$method $path: $status $(head -c 400 "$out")"
        rm -f "$out" "$out.h"
        return 1
    fi
    sed -n 's/^[Ll]ocation: *\([^[:space:]]*\).*/\1/p' "$out.h"
    rm -f "$out" "$out.h"
}

step "project $PROJECT, registry endpoint and event-based push policy (through the API)"
api POST /projects "{\"project_name\":\"$PROJECT\",\"metadata\":{\"public\":\"false\"}}" >/dev/null ||
    die "could not create project $PROJECT"
location="$(api POST /registries "{\"name\":\"bench-dest\",\"type\":\"docker-registry\",\"url\":\"$DEST_URL\",\"insecure\":true,\"credential\":{\"type\":\"basic\",\"access_key\":\"\",\"access_secret\":\"\"},\"rate_limit_per_second\":0,\"rate_limit_burst\":0,\"max_concurrency\":0}")" ||
    die "could not create the registry endpoint"
REGISTRY_ID="${location##*/}"
[[ "$REGISTRY_ID" =~ ^[0-9]+$ ]] || die "POST /registries gave Location '$location'"
api POST /replication/policies "{\"name\":\"bench-push\",\"dest_registry\":{\"id\":$REGISTRY_ID},\"filters\":[{\"type\":\"name\",\"value\":\"$PROJECT/**\"}],\"trigger\":{\"type\":\"event_based\",\"trigger_settings\":{\"cron\":\"\"}},\"dest_namespace\":\"\",\"override\":true,\"enabled\":true,\"replicate_deletion\":false,\"speed\":-1}" >/dev/null ||
    die "could not create the replication policy"
note "registry endpoint $REGISTRY_ID ($DEST_URL), policy bench-push for $PROJECT/**"

# What every worker process gets. The load generator reads the database URL from
# LOADTEST_DATABASE_URL (for its task summaries), never from its command line.
export BERTH_DATABASE_URL="$DB_URL" BERTH_NATS_URL="$NATS_URL"
export BERTH_SECRET_KEY_FILE="$DIR/berth/secret.key"
export BERTH_REPLICATE__TOKEN_KEY_FILE="$DIR/berth/auth/token-key.pem"
export BERTH_REPLICATE__REGISTRY_URL="$GW_URL"
export BERTH_REPLICATE__REGISTRY_POLL_MS=500
export BERTH_PIPELINE__CONSUMERS__REPLICATE__CONCURRENCY="$CONCURRENCY"
export LOADTEST_DATABASE_URL="$DB_URL"
export RUST_LOG="${RUST_LOG:-warn}"

# start_worker LABEL: one more `berth-workers replicate`, waited for until it has
# registered (a worker_processes row with its pid). The loadtest's warm-up image then
# proves the whole chain before any clock starts.
start_worker() {
    local n=$((${#WORKER_PIDS[@]} + 1)) pid i seen=0 log="$DIR/workers-$1-$((${#WORKER_PIDS[@]} + 1)).log"
    "$BIN/berth-workers" replicate >"$log" 2>&1 &
    pid=$!
    WORKER_PIDS+=("$pid")
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$log" >&2; die "berth-workers replicate #$n exited during startup (log: $log)"; }
        seen="$(psql "$DB_URL" -X -tA -c "SELECT count(*) FROM worker_processes WHERE pid = $pid" 2>/dev/null || echo 0)"
        [ "$seen" -ge 1 ] 2>/dev/null && break
        sleep 0.1
    done
    if [ "$seen" -ge 1 ] 2>/dev/null; then
        note "berth-workers replicate #$n ready (pid $pid, log $log)"
    else
        note "berth-workers replicate #$n (pid $pid) has not registered after 30 s; going on"
    fi
}

# ------------------------------------------------------------------ CPU accounting

CLK_TCK="$(getconf CLK_TCK)"
CPU_NOTES=()

# cpu_ticks PID…: user + system clock ticks the processes have used (gone ones: 0).
cpu_ticks() {
    local total=0 pid stat f
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        # Fields after "pid (comm) ": state is [0], utime [11], stime [12].
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# children_ticks: user + system ticks of this shell's waited-for descendants (the
# loadtest, and the skopeo processes it reaped), from `times`. Call it in this shell,
# not in $(…).
children_ticks() {
    local line
    # `times` in this shell: in a pipe or $(…) it would report a subshell's children.
    times >"$DIR/times.txt"
    line="$(tail -n 1 "$DIR/times.txt")"
    # "0m1.234s 0m0.567s" → ticks.
    awk -v tck="$CLK_TCK" '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d\n", t * tck }' <<<"$line"
}

# pg_backends: pid and ticks of every PostgreSQL backend on the bench database that
# runs on this machine, one "pid ticks" a line.
pg_backends() {
    local pid
    for pid in $(psql "$DB_URL" -X -tA -c "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" 2>/dev/null); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || continue
        echo "$pid $(cpu_ticks "$pid")"
    done
}

CPU_BEFORE=()
declare -A PG_BEFORE=()
cpu_begin() {
    local pid ticks
    children_ticks >"$DIR/children.txt"
    CPU_BEFORE=("$(cpu_ticks "$GW_PID")" "$(cpu_ticks "${WORKER_PIDS[@]}")" "$(cpu_ticks "$REG_PID")"
        "$(cpu_ticks "$NATS_PID")" "$(cat "$DIR/children.txt")")
    PG_BEFORE=()
    while read -r pid ticks; do
        [ -n "$pid" ] && PG_BEFORE[$pid]="$ticks"
    done < <(pg_backends)
}

# cpu_end NAME: the CPU seconds each part used since cpu_begin, as a line of the report.
# PostgreSQL counts only backends alive at the end (the worker's short-lived
# tag-lock connections are missed).
cpu_end() {
    local pid ticks pg=0 now
    while read -r pid ticks; do
        [ -n "$pid" ] || continue
        pg=$((pg + ticks - ${PG_BEFORE[$pid]:-0}))
    done < <(pg_backends)
    children_ticks >"$DIR/children.txt"
    now=("$(cpu_ticks "$GW_PID")" "$(cpu_ticks "${WORKER_PIDS[@]}")" "$(cpu_ticks "$REG_PID")"
        "$(cpu_ticks "$NATS_PID")" "$(cat "$DIR/children.txt")")
    local s
    s="$(awk -v tck="$CLK_TCK" -v gw=$((now[0] - CPU_BEFORE[0])) -v wk=$((now[1] - CPU_BEFORE[1])) \
        -v reg=$((now[2] - CPU_BEFORE[2])) -v nats=$((now[3] - CPU_BEFORE[3])) \
        -v lt=$((now[4] - CPU_BEFORE[4])) -v pg="$pg" 'BEGIN {
            printf "berth-gateway %.1f, berth-workers %.1f, docker-registry %.1f, nats-server %.1f, PostgreSQL backends %.1f, loadtest (with the skopeo processes it ran) %.1f",
                gw / tck, wk / tck, reg / tck, nats / tck, pg / tck, lt / tck }')"
    note "CPU seconds during $1: $s"
    CPU_NOTES+=("CPU seconds during $1: $s.")
}

# figure NAME ARGS…: `loadtest replication ARGS… --json`, its JSON line appended to the
# results; a failure is recorded, not fatal.
figure() {
    local name="$1"
    shift
    cpu_begin
    if ! "$LT" replication "$@" --json >>"$RESULTS"; then
        FAILED+=("$name")
        note "FAILED: $name"
    fi
    cpu_end "$name"
    kill -0 "$GW_PID" 2>/dev/null || die "berth-gateway has died; see $DIR/gateway.log"
    kill -0 "$NATS_PID" 2>/dev/null || die "nats-server has died; see $DIR/nats.log"
}

# ------------------------------------------------------------------ figures

ENDS=(--target "$GW_URL" --username admin --dest "$DEST_URL" --project "$PROJECT")
FIRST_IMAGES=""
for n in $PROCESSES; do
    stop_workers
    fresh_registry "burst-$n"
    for ((w = 0; w < n; w++)); do
        start_worker "burst-$n"
    done
    step "(burst) $IMAGES images over $REPOS repositories, $PUSH_CONCURRENCY pushes at a time, $n worker process(es) × $CONCURRENCY"
    figure "burst with $n process(es)" burst "${ENDS[@]}" --count "$IMAGES" --repos "$REPOS" \
        --push-concurrency "$PUSH_CONCURRENCY" --processes "$n" --worker-concurrency "$CONCURRENCY" \
        --images-out "$DIR/images-$n.tsv"
    if [ -z "$FIRST_IMAGES" ] && [ -s "$DIR/images-$n.tsv" ]; then
        FIRST_IMAGES="$DIR/images-$n.tsv"
        # The peer right after the first burst, with no worker running.
        stop_workers
        fresh_registry skopeo
        step "(peer) skopeo copy of the same $IMAGES images, $SKOPEO_PARALLEL at a time"
        figure "skopeo peer" skopeo --source "$GW_URL" --username admin --dest "$DEST_URL" \
            --images "$FIRST_IMAGES" --parallel "$SKOPEO_PARALLEL" --work-dir "$DIR"
    fi
done

stop_workers
fresh_registry steady
start_worker steady
step "(steady) $RATE pushes/s for $SECS s, one worker process × $CONCURRENCY"
figure "steady-state latency" latency "${ENDS[@]}" --rate "$RATE" --duration-secs "$SECS" \
    --processes 1
stop_workers
stop_pid "$REG_PID" docker-registry 15
REG_PID=""

# ------------------------------------------------------------------ report

step "report"
how="scripts/bench-replication.sh"
[ "$QUICK" = 0 ] || how="$how --quick (a smoke run: fewer images, a shorter steady state)"
notes=(--note "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); Berth $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no commit)'), $(docker-registry --version 2>/dev/null | awk '{ print $2, $3 }'), $(skopeo --version 2>/dev/null), $(nats-server --version 2>/dev/null | head -n 1), PostgreSQL $(psql "$DB_URL" -X -tA -c 'SHOW server_version' 2>/dev/null || echo '?'), all on this machine; every worker process runs replicate concurrency $CONCURRENCY, the endpoint has no rate or concurrency limit. Generated $(date -u '+%Y-%m-%d %H:%M UTC') by $how.")
if [ "${#CPU_NOTES[@]}" -gt 0 ]; then
    notes+=(--note "$(printf '%s ' "${CPU_NOTES[@]}")(Each figure's time includes its untimed set-up: image generation, warm-up, the final checks.)")
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
    notes+=(--note "FAILED figures (no result): $(printf '%s; ' "${FAILED[@]}")see the output above and ./var/bench/replication/*.log.")
fi
{
    printf '## Replication\n\n'
    "$LT" replication report --results "$RESULTS" "${notes[@]}"
} >"$DIR/report.md"
if [ -n "$REPORT_TO" ]; then
    { printf '\n'; cat "$DIR/report.md"; } >>"$REPORT_TO"
fi
printf '\n'
cat "$DIR/report.md"
printf '\n(written to ./var/bench/replication/report.md%s)\n' "${REPORT_TO:+ and appended to $REPORT_TO}"
if [ "${#FAILED[@]}" -gt 0 ]; then
    STEP="replication figures: ${#FAILED[@]} failed ($(printf '%s; ' "${FAILED[@]}" | sed 's/; $//'))"
    exit 1
fi
