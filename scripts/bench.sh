#!/usr/bin/env bash
# scripts/bench.sh: `make bench`. Berth against Debian's docker-registry, same machine,
# same run, both storing on the local filesystem.
#
# Builds berth-gateway and loadtest (release), starts docker-registry on 127.0.0.1:5001
# and berth-gateway on 127.0.0.1:5002 (fresh data directories under ./var/bench, a fresh
# database berth_bench_<timestamp>), runs each loadtest scenario against both, measures
# `openssl speed -evp sha256` and the gateway's peak RSS under concurrent 1 GiB uploads,
# and prints a markdown table (also written to ./var/bench/report.md). The blob data is
# deleted when the run ends; the report, the JSON results and the server logs stay.
#
# Environment (defaults in brackets):
#   DATABASE_URL            PostgreSQL server to create the bench database on
#                           [scripts/postgres.sh start bench-postgres 54331]
#   BENCH_BLOB_MIB          size of the push/pull blob [1024]
#   BENCH_REPEAT            push/pull repetitions, best reported [2]
#   BENCH_IMAGES            images pushed by push-images [500]
#   BENCH_DURATION_SECS     length of each request-rate scenario [10]
#   BENCH_RSS_UPLOADS       concurrent 1 GiB uploads for the RSS figure [32]; fewer when
#                           the disk lacks room (the table says so)
#   BENCH_RSS_BASELINE      1: run the concurrent uploads against docker-registry too [0]
#   BENCH_SKIP_BUILD        1: use the binaries already in target/release [0]
#   BENCH_KEEP              1: keep ./var/bench/{berth,registry} data afterwards [0]
# Any other BERTH_* variable set in the environment reaches the gateway unchanged.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH="$VAR/bench"
REG_PORT=5001
BERTH_PORT=5002
PG_NAME=bench-postgres
PG_PORT=54331
BLOB_MIB="${BENCH_BLOB_MIB:-1024}"
REPEAT="${BENCH_REPEAT:-2}"
IMAGES="${BENCH_IMAGES:-500}"
DURATION="${BENCH_DURATION_SECS:-10}"
RSS_UPLOADS="${BENCH_RSS_UPLOADS:-32}"
RSS_BASELINE="${BENCH_RSS_BASELINE:-0}"
for v in BLOB_MIB REPEAT IMAGES DURATION RSS_UPLOADS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, got '${!v}'"
done

REG_PID="" GW_PID="" DB_NAME="" ADMIN_URL="" PG_STARTED=0
NOTES=()
FAILED=()

# ------------------------------------------------------------------ cleanup

cleanup() {
    stop_pid "$GW_PID" berth-gateway 15
    stop_pid "$REG_PID" docker-registry 15
    GW_PID="" REG_PID=""
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
        rm -rf "$BENCH/berth" "$BENCH/registry"
    fi
}
at_exit cleanup
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ setup

step "dependencies"
for tool in curl psql openssl docker-registry; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        [ -x "$ROOT/scripts/deps.sh" ] || die "$tool is missing"
        "$ROOT/scripts/deps.sh" bench
        break
    fi
done
for tool in curl psql openssl docker-registry; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (see scripts/deps.sh bench)"
done

BIN="$(target_dir)/release"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    step "build (release): berth-gateway, loadtest"
    # The committed .sqlx/ data, not whatever DATABASE_URL points at, checks the queries.
    SQLX_OFFLINE=true cargo build --release -p berth-gateway -p berth-loadtest
fi
LT="$BIN/loadtest"
{ [ -x "$LT" ] && [ -x "$BIN/berth-gateway" ]; } || die "missing $LT or $BIN/berth-gateway"

step "fresh ./var/bench"
for port in "$REG_PORT" "$BERTH_PORT"; do
    ! port_open "$port" || die "127.0.0.1:$port is already taken; stop whatever listens there"
done
rm -rf "$BENCH"
mkdir -p "$BENCH/berth" "$BENCH/registry"

# wait_v2 PORT PID NAME LOG: until GET /v2/ answers 200 (60 s at most).
wait_v2() {
    local port="$1" pid="$2" name="$3" log="$4" i
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2 || true
            die "$name exited during startup (log: $log)"
        fi
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null; then
            note "$name ready on 127.0.0.1:$port (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 40 "$log" >&2 || true
    die "$name did not answer on 127.0.0.1:$port/v2/ within 60 s"
}

step "docker-registry on 127.0.0.1:$REG_PORT"
cat >"$BENCH/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $BENCH/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REG_PORT
EOF
docker-registry serve "$BENCH/registry.yml" >"$BENCH/registry.log" 2>&1 &
REG_PID=$!
wait_v2 "$REG_PORT" "$REG_PID" docker-registry "$BENCH/registry.log"

step "PostgreSQL for the gateway"
if [ -z "${DATABASE_URL:-}" ] && ! port_open "$PG_PORT"; then
    PG_STARTED=1
fi
ADMIN_URL="$("$ROOT/scripts/postgres.sh" start "$PG_NAME" "$PG_PORT" | tail -n 1)"
[ -n "$ADMIN_URL" ] || die "scripts/postgres.sh printed no URL"
DB_NAME="berth_bench_$(date +%Y%m%d%H%M%S)_$$"
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME" >/dev/null ||
    die "cannot create database $DB_NAME on $(db_url_with_name "$ADMIN_URL" postgres)"
DB_URL="$(db_url_with_name "$ADMIN_URL" "$DB_NAME")"
note "database $DB_NAME"

step "berth-gateway on 127.0.0.1:$BERTH_PORT"
BERTH_LISTEN="127.0.0.1:$BERTH_PORT" BERTH_DATA_DIR="$BENCH/berth" BERTH_DATABASE_URL="$DB_URL" \
    RUST_LOG="${RUST_LOG:-warn}" "$BIN/berth-gateway" >"$BENCH/gateway.log" 2>&1 &
GW_PID=$!
wait_v2 "$BERTH_PORT" "$GW_PID" berth-gateway "$BENCH/gateway.log"

# ------------------------------------------------------------------ scenarios

: >"$BENCH/berth.jsonl"
: >"$BENCH/registry.jsonl"

# bench WHO SCENARIOS [ARGS…]: run loadtest against berth or registry, appending its
# JSON lines to ./var/bench/WHO.jsonl; a failure is recorded, not fatal.
bench() {
    local who="$1" scenarios="$2" port pid
    shift 2
    case "$who" in
        berth) port="$BERTH_PORT" pid="$GW_PID" ;;
        registry) port="$REG_PORT" pid="$REG_PID" ;;
    esac
    if ! "$LT" "$scenarios" --target "http://127.0.0.1:$port" --repo "bench/$who" \
        --watch-pid "$pid" --json "$@" >>"$BENCH/$who.jsonl"; then
        FAILED+=("$scenarios against $who")
        note "FAILED: $scenarios against $who"
        kill -0 "$pid" 2>/dev/null || die "$who (pid $pid) has died; see ./var/bench/*.log"
    fi
}

both() {
    bench berth "$@"
    bench registry "$@"
}

step "push and pull a $BLOB_MIB MiB blob (best of $REPEAT)"
both push-blob,pull-blob --size-mib "$BLOB_MIB" --repeat "$REPEAT"

step "chunked upload: 256 MiB in 8 MiB PATCHes"
both chunked-upload --size-mib 256 --chunk-mib 8

step "push $IMAGES images (config + 3 × 256 KiB layers + manifest) at concurrency 32"
both push-images --count "$IMAGES" --concurrency 32

step "GET manifest by tag: 64 connections, $DURATION s"
both get-manifest --concurrency 64 --duration-secs "$DURATION"

step "HEAD blob: 64 connections, $DURATION s"
both head-blob --concurrency 64 --duration-secs "$DURATION"

step "openssl speed -evp sha256 (16 KiB blocks, 3 s, one core)"
openssl speed -evp sha256 -bytes 16384 -seconds 3 >"$BENCH/openssl.txt" 2>&1 ||
    note "openssl speed failed; see ./var/bench/openssl.txt"
grep -i '^sha' "$BENCH/openssl.txt" >&2 || true

# How many 1 GiB uploads fit on the disk, keeping 5 GiB free (each upload is counted
# at 1.1 GiB for directories and a moment where upload and blob coexist).
fit_uploads() {
    local avail_kib need_kib n
    avail_kib="$(df -Pk "$BENCH" | awk 'NR == 2 { print $4 }')"
    need_kib=$((1024 * 1024 * 11 / 10))
    n=$(((avail_kib - 5 * 1024 * 1024) / need_kib))
    [ "$n" -gt 0 ] || n=0
    [ "$n" -lt "$1" ] || n="$1"
    echo "$n"
}

step "gateway peak RSS: $RSS_UPLOADS concurrent 1 GiB uploads"
n="$(fit_uploads "$RSS_UPLOADS")"
if [ "$n" -lt "$RSS_UPLOADS" ]; then
    NOTES+=("Peak RSS was measured with $n concurrent 1 GiB uploads, not $RSS_UPLOADS: the disk had room for only that many.")
fi
if [ "$n" -gt 0 ]; then
    failed_before="${#FAILED[@]}"
    bench berth concurrent-push --size-mib 1024 --concurrency "$n"
    if [ "${#FAILED[@]}" -eq "$failed_before" ]; then
        hwm="$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$GW_PID/status" 2>/dev/null || true)"
        note "gateway VmHWM after the uploads: ${hwm:-?} MiB (reset when they started)"
    fi
else
    NOTES+=("Peak RSS under concurrent uploads was not measured: no room on the disk.")
fi
if [ "$RSS_BASELINE" = 1 ] && [ "$n" -gt 0 ]; then
    # Make room: Berth is done, so its data can go first.
    stop_pid "$GW_PID" berth-gateway 15
    GW_PID=""
    rm -rf "$BENCH/berth"
    bench registry concurrent-push --size-mib 1024 --concurrency "$n"
else
    NOTES+=("docker-registry was not given the concurrent uploads (set BENCH_RSS_BASELINE=1 to include it).")
fi

# ------------------------------------------------------------------ report

step "report"
NOTES+=("Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); Berth $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no commit)'), $(docker-registry --version 2>/dev/null | awk '{ print $2, $3 }'), both storing under ./var/bench on $(df -P "$BENCH" | awk 'NR == 2 { print $1 }'). Generated $(date -u '+%Y-%m-%d %H:%M UTC') by scripts/bench.sh.")
if [ "${#FAILED[@]}" -gt 0 ]; then
    NOTES+=("FAILED scenarios (no figure): $(printf '%s; ' "${FAILED[@]}")see the output above and ./var/bench/*.log.")
fi
note_args=()
for n in "${NOTES[@]}"; do note_args+=(--note "$n"); done
"$LT" report --berth "$BENCH/berth.jsonl" --baseline "$BENCH/registry.jsonl" \
    --openssl "$BENCH/openssl.txt" "${note_args[@]}" >"$BENCH/report.md"
printf '\n'
cat "$BENCH/report.md"
printf '\n(written to ./var/bench/report.md)\n'
if [ "${#FAILED[@]}" -gt 0 ]; then
    STEP="benchmark scenarios: ${#FAILED[@]} failed ($(printf '%s; ' "${FAILED[@]}" | sed 's/; $//'))"
    exit 1
fi
