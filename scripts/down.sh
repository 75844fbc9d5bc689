#!/usr/bin/env bash
# scripts/down.sh: stop what `make up` started (`make down`). Touches only processes
# under ./var: the gateway by its pid file (SIGTERM, then up to 35s to drain), the workers likewise, NATS by
# its pid file, the ./var/postgres cluster. Servers named by DATABASE_URL or NATS_URL
# are never stopped. Data in ./var stays; `make clean-var` removes it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step "stopping the local system"
for wpid in "$VAR"/workers-*.pid; do
    [ -e "$wpid" ] && stop_pidfile "$wpid" berth-workers 35
done
stop_pidfile "$VAR/gateway.pid" berth-gateway 35
"$ROOT/scripts/nats.sh" stop
"$ROOT/scripts/postgres.sh" stop postgres "${DEV_PG_PORT:-54329}"
