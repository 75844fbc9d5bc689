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
# Auth cost: a second docker-registry with htpasswd auth (127.0.0.1:5003) and a second
# berth-gateway with token auth (127.0.0.1:5004, its own database) get the push-images
# and get-manifest scenarios again, the load generator logging in as docker does (Basic
# on every request to docker-registry; Berth: Basic to the token endpoint once per
# repository scope, then Bearer). The table shows both rates and auth cost = 1 - rate
# with auth / rate without; Berth's target is under 10 %. The password is random per
# run; the htpasswd file is written with bcrypt from ./var/venv (scripts/deps.sh bench).
# The unauthenticated Berth runs with BERTH_AUTH__MODE=none.
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
#   BENCH_KEEP              1: keep ./var/bench/{berth,registry}* data afterwards [0]
#   BENCH_AUTH              0: skip the runs with authentication on [1]
#   BENCH_PIPELINE          0: skip the event pipeline benchmark that runs last
#                           (scripts/bench-pipeline.sh; its table is appended) [1]
#   BENCH_REPLICATION       0: skip the replication benchmark that runs after it
#                           (scripts/bench-replication.sh; its table is appended) [1]
#   BENCH_QUICK             1: the replication benchmark's smoke run [0]
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
AUTH="${BENCH_AUTH:-1}"
REG_AUTH_PORT=5003
BERTH_AUTH_PORT=5004
for v in BLOB_MIB REPEAT IMAGES DURATION RSS_UPLOADS AUTH; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, got '${!v}'"
done

REG_PID="" GW_PID="" DB_NAME="" ADMIN_URL="" PG_STARTED=0
REG_AUTH_PID="" GW_AUTH_PID="" DB_AUTH_NAME=""
NOTES=()
FAILED=()

# ------------------------------------------------------------------ cleanup

cleanup() {
    stop_pid "$GW_PID" berth-gateway 15
    stop_pid "$REG_PID" docker-registry 15
    stop_pid "$GW_AUTH_PID" "berth-gateway (token auth)" 15
    stop_pid "$REG_AUTH_PID" "docker-registry (htpasswd)" 15
    GW_PID="" REG_PID="" GW_AUTH_PID="" REG_AUTH_PID=""
    local db
    for db in "$DB_NAME" "$DB_AUTH_NAME"; do
        if [ -n "$db" ] && [ -n "$ADMIN_URL" ]; then
            psql "$ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
                note "could not drop database $db"
        fi
    done
    DB_NAME="" DB_AUTH_NAME=""
    if [ "$PG_STARTED" = 1 ]; then
        "$ROOT/scripts/postgres.sh" stop "$PG_NAME" "$PG_PORT" >/dev/null 2>&1 || true
        PG_STARTED=0
    fi
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        rm -rf "$BENCH/berth" "$BENCH/registry" "$BENCH/berth-auth" "$BENCH/registry-auth"
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
if [ "$AUTH" = 1 ]; then
    # bcrypt for the htpasswd file comes from the venv; deps.sh is quiet when it is there.
    "$ROOT/scripts/deps.sh" bench
    [ -x "$VAR/venv/bin/python" ] || die "$VAR/venv is missing (see scripts/deps.sh bench)"
fi

BIN="$(target_dir)/release"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    step "build (release): berth-gateway, loadtest"
    # The committed .sqlx/ data, not whatever DATABASE_URL points at, checks the queries.
    SQLX_OFFLINE=true cargo build --release -p berth-gateway -p berth-loadtest
fi
LT="$BIN/loadtest"
{ [ -x "$LT" ] && [ -x "$BIN/berth-gateway" ]; } || die "missing $LT or $BIN/berth-gateway"

step "fresh ./var/bench"
for port in "$REG_PORT" "$BERTH_PORT" "$REG_AUTH_PORT" "$BERTH_AUTH_PORT"; do
    ! port_open "$port" || die "127.0.0.1:$port is already taken; stop whatever listens there"
done
rm -rf "$BENCH"
mkdir -p "$BENCH/berth" "$BENCH/registry"

# wait_v2 PORT PID NAME LOG [STATUS]: until GET /v2/ answers STATUS (default 200; 401
# for a registry that wants credentials), 60 s at most.
wait_v2() {
    local port="$1" pid="$2" name="$3" log="$4" want="${5:-200}" i status
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2 || true
            die "$name exited during startup (log: $log)"
        fi
        status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null || true)"
        if [ "$status" = "$want" ]; then
            note "$name ready on 127.0.0.1:$port (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 40 "$log" >&2 || true
    die "$name did not answer $want on 127.0.0.1:$port/v2/ within 60 s"
}

# registry_config DIR PORT [AUTH]: a docker-registry configuration storing under DIR,
# listening on PORT, with AUTH (a YAML block) appended.
registry_config() {
    cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$2
${3:-}
EOF
}

step "docker-registry on 127.0.0.1:$REG_PORT"
registry_config "$BENCH/registry" "$REG_PORT" >"$BENCH/registry.yml"
docker-registry serve "$BENCH/registry.yml" >"$BENCH/registry.log" 2>&1 &
REG_PID=$!
wait_v2 "$REG_PORT" "$REG_PID" docker-registry "$BENCH/registry.log"

if [ "$AUTH" = 1 ]; then
    step "docker-registry with htpasswd auth on 127.0.0.1:$REG_AUTH_PORT"
    # One random password for both authenticated servers; the loadtest reads it from
    # LOADTEST_PASSWORD, never from its command line. "Bb1-" meets Berth's (Harbor's)
    # rule for the administrator's password: upper case, lower case and a digit.
    LOADTEST_PASSWORD="Bb1-$(openssl rand -hex 16)"
    export LOADTEST_PASSWORD
    mkdir -p "$BENCH/registry-auth"
    # bcrypt cost 5 is what `htpasswd -B` uses by default; docker-registry checks it on
    # every request. The password goes through stdin, not argv.
    printf '%s' "$LOADTEST_PASSWORD" | "$VAR/venv/bin/python" -c \
        'import sys, bcrypt; print("bench:" + bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt(rounds=5)).decode())' \
        >"$BENCH/htpasswd" || die "could not write $BENCH/htpasswd with bcrypt from $VAR/venv"
    registry_config "$BENCH/registry-auth" "$REG_AUTH_PORT" "auth:
  htpasswd:
    realm: berth-bench
    path: $BENCH/htpasswd" >"$BENCH/registry-auth.yml"
    docker-registry serve "$BENCH/registry-auth.yml" >"$BENCH/registry-auth.log" 2>&1 &
    REG_AUTH_PID=$!
    wait_v2 "$REG_AUTH_PORT" "$REG_AUTH_PID" "docker-registry (htpasswd)" "$BENCH/registry-auth.log" 401
fi

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

step "berth-gateway on 127.0.0.1:$BERTH_PORT (auth off)"
BERTH_LISTEN="127.0.0.1:$BERTH_PORT" BERTH_DATA_DIR="$BENCH/berth" BERTH_DATABASE_URL="$DB_URL" \
    BERTH_AUTH__MODE=none BERTH_PROJECTS__CREATE_ON_PUSH=true \
    RUST_LOG="${RUST_LOG:-warn}" "$BIN/berth-gateway" >"$BENCH/gateway.log" 2>&1 &
GW_PID=$!
wait_v2 "$BERTH_PORT" "$GW_PID" berth-gateway "$BENCH/gateway.log"

if [ "$AUTH" = 1 ]; then
    step "berth-gateway with token auth on 127.0.0.1:$BERTH_AUTH_PORT"
    DB_AUTH_NAME="${DB_NAME}_auth"
    psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_AUTH_NAME" >/dev/null ||
        die "cannot create database $DB_AUTH_NAME"
    mkdir -p "$BENCH/berth-auth"
    # The administrator may create projects by pushing, so the scenarios need no setup.
    BERTH_LISTEN="127.0.0.1:$BERTH_AUTH_PORT" BERTH_DATA_DIR="$BENCH/berth-auth" \
        BERTH_DATABASE_URL="$(db_url_with_name "$ADMIN_URL" "$DB_AUTH_NAME")" \
        BERTH_AUTH__MODE=token BERTH_AUTH__ADMIN_PASSWORD="$LOADTEST_PASSWORD" \
        BERTH_PROJECTS__CREATE_ON_PUSH=true \
        RUST_LOG="${RUST_LOG:-warn}" "$BIN/berth-gateway" >"$BENCH/gateway-auth.log" 2>&1 &
    GW_AUTH_PID=$!
    wait_v2 "$BERTH_AUTH_PORT" "$GW_AUTH_PID" "berth-gateway (token auth)" "$BENCH/gateway-auth.log" 401
fi

# ------------------------------------------------------------------ scenarios

: >"$BENCH/berth.jsonl"
: >"$BENCH/registry.jsonl"
: >"$BENCH/berth-auth.jsonl"
: >"$BENCH/registry-auth.jsonl"

# bench WHO SCENARIOS [ARGS…]: run loadtest against berth, registry, berth-auth or
# registry-auth, appending its JSON lines to ./var/bench/WHO.jsonl; a failure is
# recorded, not fatal. The *-auth targets are given the user (password in the
# environment).
bench() {
    local who="$1" scenarios="$2" port pid login=()
    shift 2
    case "$who" in
        berth) port="$BERTH_PORT" pid="$GW_PID" ;;
        registry) port="$REG_PORT" pid="$REG_PID" ;;
        berth-auth) port="$BERTH_AUTH_PORT" pid="$GW_AUTH_PID" login=(--username admin) ;;
        registry-auth) port="$REG_AUTH_PORT" pid="$REG_AUTH_PID" login=(--username bench) ;;
    esac
    if ! "$LT" "$scenarios" --target "http://127.0.0.1:$port" --repo "bench/$who" \
        --watch-pid "$pid" --json "${login[@]}" "$@" >>"$BENCH/$who.jsonl"; then
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

if [ "$AUTH" = 1 ]; then
    step "with auth (Berth: token flow; docker-registry: htpasswd): push $IMAGES images, GET manifest"
    bench berth-auth push-images --count "$IMAGES" --concurrency 32
    bench registry-auth push-images --count "$IMAGES" --concurrency 32
    bench berth-auth get-manifest --concurrency 64 --duration-secs "$DURATION"
    bench registry-auth get-manifest --concurrency 64 --duration-secs "$DURATION"
    # Idle from here on: they would only hold memory and disk during the RSS step.
    stop_pid "$GW_AUTH_PID" "berth-gateway (token auth)" 15
    stop_pid "$REG_AUTH_PID" "docker-registry (htpasswd)" 15
    GW_AUTH_PID="" REG_AUTH_PID=""
fi

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
    --berth-auth "$BENCH/berth-auth.jsonl" --baseline-auth "$BENCH/registry-auth.jsonl" \
    --openssl "$BENCH/openssl.txt" "${note_args[@]}" >"$BENCH/report.md"
printf '\n'
cat "$BENCH/report.md"
printf '\n(written to ./var/bench/report.md)\n'
if [ "${BENCH_PIPELINE:-1}" != 0 ]; then
    step "event pipeline: scripts/bench-pipeline.sh (appended to ./var/bench/report.md)"
    "$ROOT/scripts/bench-pipeline.sh" --report "$BENCH/report.md" || FAILED+=("event pipeline")
fi
if [ "${BENCH_REPLICATION:-1}" != 0 ]; then
    step "replication: scripts/bench-replication.sh (appended to ./var/bench/report.md)"
    "$ROOT/scripts/bench-replication.sh" --report "$BENCH/report.md" || FAILED+=("replication")
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
    STEP="benchmark scenarios: ${#FAILED[@]} failed ($(printf '%s; ' "${FAILED[@]}" | sed 's/; $//'))"
    exit 1
fi
