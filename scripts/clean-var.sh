#!/usr/bin/env bash
# scripts/clean-var.sh: stop every server running under ./var (what `make up`, the
# tests and the benchmark started) and delete ./var with all local data
# (`make clean-var`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/down.sh"
for version in "$VAR"/*/PG_VERSION; do
    [ -e "$version" ] || continue
    cluster="$(basename "$(dirname "$version")")"
    "$ROOT/scripts/postgres.sh" stop "$cluster" 0
done

step "removing ./var"
if [ -d "$VAR" ]; then
    # Clusters moved to /tmp (see postgres.sh) are symlinked from ./var; all of one
    # checkout's share a directory named by a hash of its path: remove it too.
    for link in "$VAR"/*; do
        [ -L "$link" ] || continue
        target="$(readlink -m "$link")"
        case "$target" in /tmp/berth-pg-*/*) rm -rf "$(dirname "$target")" ;; esac
    done
    rm -rf "$VAR"
fi
note "done"
