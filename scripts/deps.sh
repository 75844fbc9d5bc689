#!/usr/bin/env bash
# scripts/deps.sh [up|test|bench]   (default: test)
#
# Installs what the given use needs and is missing: Debian packages with apt-get (an
# `apt-get update` only when an install fails), Rust components with rustup, sqlx-cli
# with cargo install, and (test, bench) the Python venv ./var/venv with the pinned
# packages of gateway/tests/harborapi/requirements.txt (the harborapi client suite, the
# OpenAPI validator, bcrypt for the benchmark's htpasswd file). Silent apart from one
# line when everything is present.
#
# Environment:
#   DATABASE_URL   set: no local PostgreSQL server is needed, so none is installed
#   NATS_URL       set: no local NATS server is needed (for `up`)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

profile="${1:-test}"
case "$profile" in up | test | bench) ;; *) die "usage: scripts/deps.sh [up|test|bench]" ;; esac
step "dependencies ($profile)"

missing=()
# need PACKAGE CHECK...: queue PACKAGE when the check command fails.
need() {
    local pkg="$1"
    shift
    "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
have() { command -v "$1"; }
have_pg_server() { ls /usr/lib/postgresql/*/bin/pg_ctl && have psql; }

need curl have curl
need procps have pgrep
[ -n "${DATABASE_URL:-}" ] || need postgresql have_pg_server
case "$profile" in
    up)
        [ -n "${NATS_URL:-}" ] || need nats-server have nats-server
        need skopeo have skopeo
        ;;
    test | bench)
        need nats-server have nats-server
        need skopeo have skopeo
        need docker-registry have docker-registry
        need openssl have openssl
        need jq have jq
        need python3 have python3
        # Debian's python3 lacks venv's ensurepip until python3-venv is installed; only
        # needed while ./var/venv does not exist yet.
        [ -x "$VAR/venv/bin/python" ] || need python3-venv python3 -c 'import ensurepip'
        ;;
esac

apt_install() {
    local log="$VAR/apt.log"
    mkdir -p "$VAR"
    note "apt-get install ${missing[*]} (log: $log)"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        note "install failed; running apt-get update and retrying"
        as_root apt-get update -q >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed"; }
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
}
[ ${#missing[@]} -eq 0 ] || apt_install
installed=("${missing[@]}")

# Rust: the toolchain itself cannot be fetched here; it must already be on the machine.
have cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

if [ "$profile" = test ]; then
    for component in rustfmt clippy; do
        sub="${component/rustfmt/fmt}"
        if ! cargo "$sub" --version >/dev/null 2>&1; then
            note "rustup component add $component"
            rustup component add "$component" >/dev/null
            installed+=("$component")
        fi
    done
fi

# sqlx-cli: `make test` checks the offline query data with it. Pinned to the sqlx
# version in Cargo.lock, so the CLI and the macros agree on the query data format.
if [ "$profile" = test ] && ! cargo sqlx --version >/dev/null 2>&1; then
    sqlx_version="$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock 2>/dev/null || true)"
    note "cargo install sqlx-cli ${sqlx_version:-(latest)} (takes a few minutes, once)"
    cargo install sqlx-cli ${sqlx_version:+--version "=$sqlx_version"} \
        --no-default-features --features postgres,rustls --locked --quiet
    installed+=("sqlx-cli")
fi

# The Python venv: created once, and `pip install -r` run only when requirements.txt
# differs from what was last installed into it (its hash is kept in the venv).
if [ "$profile" = test ] || [ "$profile" = bench ]; then
    venv="$VAR/venv"
    requirements="$ROOT/gateway/tests/harborapi/requirements.txt"
    stamp="$venv/.requirements.sha256"
    wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ]; then
        note "python3 -m venv $venv"
        mkdir -p "$VAR"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        rm -f "$stamp"
    fi
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
        note "pip install -r gateway/tests/harborapi/requirements.txt (log: $VAR/pip.log)"
        if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements" \
            >"$VAR/pip.log" 2>&1; then
            tail -n 20 "$VAR/pip.log" >&2
            die "pip install into $venv failed"
        fi
        printf '%s\n' "$wanted" >"$stamp"
        installed+=("python venv")
    fi
fi

if [ ${#installed[@]} -eq 0 ]; then
    note "all present"
else
    note "installed: ${installed[*]}"
fi
