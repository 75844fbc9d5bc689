#!/usr/bin/env bash
# scripts/demo-image.sh DIR: write a tiny single-layer OCI image layout to DIR, tagged
# `latest`, so a push can be tried with nothing but skopeo (no Docker daemon, no
# network). Reproducible: the same bytes, hence the same digests, every time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: scripts/demo-image.sh DIR"
out="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# blob FILE MEDIATYPE: move FILE into the layout, print its descriptor.
blob() {
    local digest size
    digest="$(sha256sum "$1" | cut -d' ' -f1)"
    size="$(stat -c %s "$1")"
    mv "$1" "$out/blobs/sha256/$digest"
    printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$digest" "$size"
}

rm -rf "$out"
mkdir -p "$out/blobs/sha256" "$work/rootfs"
printf 'Hello from Berth.\n' >"$work/rootfs/hello.txt"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" hello.txt
diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
layer="$(blob "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)"

printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >"$work/config.json"
config="$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$layer" >"$work/manifest.json"
manifest="$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)"

printf '{"schemaVersion":2,"manifests":[%s]}\n' \
    "${manifest%\}},\"annotations\":{\"org.opencontainers.image.ref.name\":\"latest\"}}" >"$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}\n' >"$out/oci-layout"
