#!/usr/bin/env bash
# scripts/up.sh: start the whole system locally, in the background (`make up`).
#
# PostgreSQL (./var/postgres on 127.0.0.1:$DEV_PG_PORT, default 54329) unless
# DATABASE_URL is set; NATS (./var/nats, 127.0.0.1:54222) unless NATS_URL is set; then
# the release gateway on $BERTH_LISTEN (default 127.0.0.1:5000) with its blobs in
# ./var/data, log in ./var/gateway.log, pid in ./var/gateway.pid; then one worker
# process per worker kind (`berth-workers <kind>`, log ./var/workers-<kind>.log, pid
# ./var/workers-<kind>.pid), each also a candidate for the outbox relay and the
# scheduler. Running it again rebuilds and restarts gateway and workers. Other BERTH_*
# variables reach every process as its configuration. `make down` stops it all.
#
# Authentication is on. The bootstrap administrator `admin` gets the password in
# BERTH_AUTH__ADMIN_PASSWORD, or else one the gateway generates on first start into
# ./var/data/admin-password (mode 0600); this script prints it and creates the project
# `library` for the demo push.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
at_exit :

"$ROOT/scripts/deps.sh" up

step "PostgreSQL"
if [ -n "${DATABASE_URL:-}" ]; then
    db_url="$DATABASE_URL"
    note "using DATABASE_URL (an existing server; nothing started)"
else
    db_url="$("$ROOT/scripts/postgres.sh" start postgres "${DEV_PG_PORT:-54329}")"
fi

step "NATS"
[ -z "${NATS_URL:-}" ] || note "using NATS_URL (an existing server; nothing started)"
nats_url="$("$ROOT/scripts/nats.sh" start)"

step "cargo build --release -p berth-gateway -p berth-workers"
# The committed .sqlx/ data, not whatever DATABASE_URL points at, checks the queries.
SQLX_OFFLINE=true cargo build --release -p berth-gateway -p berth-workers
bin="$(target_dir)/release/berth-gateway"
workers_bin="$(target_dir)/release/berth-workers"
# Every worker kind `berth-workers` ships; one process each.
WORKER_KINDS=(replicate echo)

step "gateway"
listen="${BERTH_LISTEN:-127.0.0.1:5000}"
port="${listen##*:}"
host="${listen%:*}"
case "$host" in 0.0.0.0 | "[::]" | "") host=127.0.0.1 ;; esac
base="http://$host:$port"
pidfile="$VAR/gateway.pid"
log="$VAR/gateway.log"

pid_alive "$pidfile" berth-gateway && stop_pidfile "$pidfile" berth-gateway 35
port_open "$port" && die "$listen is taken by another process; stop it or set BERTH_LISTEN"
mkdir -p "$VAR/data"
note "starting $bin on $listen (log: $log)"
printf '\n--- %s make up\n' "$(date -Is)" >>"$log"
first_line="$(($(wc -l <"$log") + 1))"
# What this start wrote to the log: its first lines hold the error, not a backtrace.
show_log() { tail -n +"$first_line" "$log" | head -n 40 >&2; }
# setsid: the gateway outlives the make that started it. Without job control the
# child is no group leader, so setsid execs in place and $! is the gateway's pid.
BERTH_LISTEN="$listen" BERTH_DATABASE_URL="$db_url" BERTH_DATA_DIR="$VAR/data" \
    BERTH_NATS_URL="$nats_url" setsid "$bin" </dev/null >>"$log" 2>&1 &
echo $! >"$pidfile"

# /v2/ answers 200 now, and 401 once authentication is on: either means ready.
ready=""
for ((i = 0; i < 600; i++)); do
    # No program check here: until setsid has exec'd, the pid is still a bash fork.
    if ! pid_alive "$pidfile"; then
        show_log
        die "the gateway exited during start-up (log above: $log)"
    fi
    code="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$base/v2/" || true)"
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    show_log
    die "the gateway did not answer $base/v2/ within 60s (log above: $log)"
fi

# Workers start after the gateway: it runs the migrations they need.
step "workers"
worker_logs=""
for kind in "${WORKER_KINDS[@]}"; do
    wpid="$VAR/workers-$kind.pid"
    wlog="$VAR/workers-$kind.log"
    pid_alive "$wpid" berth-workers && stop_pidfile "$wpid" berth-workers 35
    note "starting $workers_bin $kind (log: $wlog)"
    printf '\n--- %s make up\n' "$(date -Is)" >>"$wlog"
    # The gateway's keys: registry credentials (secret.key) and the token signing key
    # the replicate kind signs its own registry tokens with.
    BERTH_DATABASE_URL="$db_url" BERTH_NATS_URL="$nats_url" \
        BERTH_SECRET_KEY_FILE="$VAR/data/secret.key" \
        BERTH_REPLICATE__TOKEN_KEY_FILE="$VAR/data/auth/token-key.pem" \
        BERTH_REPLICATE__REGISTRY_URL="$base" \
        setsid "$workers_bin" "$kind" </dev/null >>"$wlog" 2>&1 &
    echo $! >"$wpid"
    worker_logs="$worker_logs  ./var/workers-$kind.log"
done
sleep 1
for kind in "${WORKER_KINDS[@]}"; do
    if ! pid_alive "$VAR/workers-$kind.pid"; then
        tail -n 40 "$VAR/workers-$kind.log" >&2
        die "berth-workers $kind exited during start-up (log above: ./var/workers-$kind.log)"
    fi
done

admin_user="${BERTH_AUTH__ADMIN_USERNAME:-admin}"
password_file="$VAR/data/admin-password"
if [ -n "${BERTH_AUTH__ADMIN_PASSWORD:-}" ]; then
    admin_password="$BERTH_AUTH__ADMIN_PASSWORD"
    password_note="(from BERTH_AUTH__ADMIN_PASSWORD)"
elif [ -r "$password_file" ]; then
    admin_password="$(head -n 1 "$password_file")"
    password_note="(generated on first start; kept in ./var/data/admin-password)"
else
    die "no administrator password: set BERTH_AUTH__ADMIN_PASSWORD or look in $log"
fi
# The demo push goes into the project `library`; 409 means it exists already.
code="$(curl -s -o /dev/null -w '%{http_code}' -u "$admin_user:$admin_password" \
    -H 'Content-Type: application/json' -d '{"project_name":"library","metadata":{"public":"false"}}' \
    "$base/api/v2.0/projects" || true)"
case "$code" in
    201 | 409) ;;
    401) note "could not create project library: the administrator password was changed through the API; create it yourself" ;;
    *) show_log; die "creating project library answered HTTP $code (log: $log)" ;;
esac

"$ROOT/scripts/demo-image.sh" "$VAR/demo-image"
cat <<EOF

Berth is up.
  registry    $base   (plain HTTP: tell clients it is insecure)
  PostgreSQL  $db_url
  NATS        $nats_url
  workers     ${WORKER_KINDS[*]}   (jobs: curl -u $admin_user:'$admin_password' $base/api/v2.0/jobservice/queues)
  logs        ./var/gateway.log  ./var/postgres.log  ./var/nats.log$worker_logs
  admin       $admin_user / $admin_password   $password_note

Log in, push a small demo image (an OCI layout just written to ./var/demo-image) into the
private project library, and read it back:
  skopeo login --tls-verify=false -u $admin_user -p '$admin_password' $host:$port
  skopeo copy --dest-tls-verify=false oci:./var/demo-image:latest docker://$host:$port/library/demo:latest
  skopeo inspect --tls-verify=false docker://$host:$port/library/demo:latest
  curl -s -u $admin_user:'$admin_password' $base/api/v2.0/projects/library/repositories

Create another project (Harbor's API, so harborapi and harbor-cli work too), then push into it:
  curl -u $admin_user:'$admin_password' -H 'Content-Type: application/json' \\
       -d '{"project_name":"myproject","metadata":{"public":"true"}}' $base/api/v2.0/projects
  skopeo copy --dest-tls-verify=false docker-archive:./image.tar docker://$host:$port/myproject/app:1.0

Stop everything: make down
EOF
