#!/usr/bin/env bash
# Makes sure buildah's local storage holds `python:3.11-slim`, offline.
#
# No container registry is reachable from our machines, so when the name is missing this builds a
# stand-in: Debian bookworm (minbase, python3, python3-venv) from the apt mirror the machine already uses,
# made into an OCI image with umoci and stored under that name with skopeo. Its python is
# /usr/bin/python3 where the real image has /usr/local/bin/python; the Dockerfile works on both.
# The downloaded packages and the OCI layout stay in $CACHE (git-ignored) for the next build.
set -euo pipefail

BASE=${BASE:-docker.io/library/python:3.11-slim}
CACHE=${CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache/base-image}
SUITE=bookworm

if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    exit 0
fi

# The first Debian mirror named in the machine's apt sources (deb822 or one-line format).
mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs "^deb .* $SUITE " /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

layout="$CACHE/oci"
if [ ! -f "$layout/index.json" ] || ! umoci stat --image "$layout:3.11-slim" >/dev/null 2>&1; then
    echo "base-image: building a stand-in for $BASE from Debian $SUITE ($(mirror))"
    rm -rf "$layout" "$CACHE/bundle"
    mkdir -p "$CACHE/debs"
    umoci init --layout "$layout"
    umoci new --image "$layout:3.11-slim"
    umoci unpack --image "$layout:3.11-slim" "$CACHE/bundle"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --cache-dir="$CACHE/debs" "$SUITE" "$CACHE/bundle/rootfs" "$(mirror)"
    rootfs="$CACHE/bundle/rootfs"
    # What python:3.11-slim leaves out as well: package lists, docs, device nodes made by debootstrap.
    rm -rf "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/apt/* "${rootfs:?}"/var/log/* \
        "${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* \
        "${rootfs:?}"/dev/* "${rootfs:?}"/proc/* "${rootfs:?}"/sys/* "${rootfs:?}"/tmp/* "${rootfs:?}"/run/*
    umoci repack --image "$layout:3.11-slim" "$CACHE/bundle"
    umoci config --image "$layout:3.11-slim" --os linux --architecture amd64 \
        --config.env 'PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --config.env LANG=C.UTF-8 --config.cmd python3
    umoci gc --layout "$layout"
    rm -rf "$CACHE/bundle"
fi
skopeo copy --quiet "oci:$layout:3.11-slim" "containers-storage:$BASE"
echo "base-image: stored $BASE"
