#!/usr/bin/env bash
# scripts/sqlx-prepare.sh: regenerate the sqlx offline query data in .sqlx/.
#
# Migrates a fresh database `berth_sqlx` (on DATABASE_URL's server, or on
# ./var/test-postgres when DATABASE_URL is unset) and runs `cargo sqlx prepare` over
# every target of the workspace, tests included. Commit .sqlx/ afterwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
at_exit :

"$ROOT/scripts/deps.sh" test
use_test_postgres

step "cargo sqlx prepare --workspace"
url="$(db_url_with_name "$DATABASE_URL" berth_sqlx)"
fresh_database "$url"
DATABASE_URL="$url" cargo sqlx prepare --workspace -- --all-targets
note "commit .sqlx/ with the queries that changed"
