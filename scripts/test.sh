#!/usr/bin/env bash
# scripts/test.sh: the whole suite, as `make test` and CI run it.
#
# Installs what is missing, then: formatting, PostgreSQL, clippy, the committed sqlx
# offline data (.sqlx/) against a freshly migrated database, and cargo test.
#
# Environment:
#   DATABASE_URL         an existing server to test against (its user must be allowed to
#                        CREATE DATABASE); unset: ./var/test-postgres is started and stopped
#   TEST_PG_PORT         port for ./var/test-postgres (default: first free from 54330)
#   KEEP_TEST_PG         1: leave ./var/test-postgres running afterwards
#   CARGO_TARGET_DIR     honoured as cargo does
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
at_exit :

"$ROOT/scripts/deps.sh" test

step "cargo fmt --all --check"
cargo fmt --all --check

use_test_postgres

step "cargo clippy --workspace --all-targets (SQLX_OFFLINE=true, -D warnings)"
mkdir -p "$VAR"
if ! SQLX_OFFLINE=true cargo clippy --workspace --all-targets -- -D warnings 2>&1 | tee "$VAR/clippy.log"; then
    if grep -q 'no cached data for this query' "$VAR/clippy.log"; then
        die ".sqlx/ lacks some queries: run 'make sqlx-prepare' and commit .sqlx/"
    fi
    die "clippy failed"
fi

step "sqlx offline query data (.sqlx/) matches the queries and migrations"
check_url="$(db_url_with_name "$DATABASE_URL" berth_sqlx_check)"
fresh_database "$check_url"
DATABASE_URL="$check_url" cargo sqlx prepare --workspace --check -- --all-targets ||
    die ".sqlx/ is stale: run 'make sqlx-prepare' and commit .sqlx/"

step "cargo build -p berth-gateway -p berth-workers (the pipeline tests run both binaries)"
SQLX_OFFLINE=true cargo build -p berth-gateway -p berth-workers

step "cargo test --workspace (SQLX_OFFLINE=true)"
note "tests create their own databases on $DATABASE_URL; the pipeline tests start their own nats-server"
# The harborapi client suite and the OpenAPI validation run in the venv deps.sh made.
export TEST_PYTHON="$VAR/venv/bin/python"
SQLX_OFFLINE=true cargo test --workspace
