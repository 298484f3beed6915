#!/usr/bin/env bash
# Build the gateway image's base from Debian packages alone (no container registry needed):
# a minimal Debian bookworm root with Debian's python3.11, imported into podman as
# localhost/cigate-base:bookworm. Needs root, debootstrap and podman.
#
#   deploy/build-base.sh [TAG] [MIRROR]
#
# Then: podman build --build-arg BASE_IMAGE=localhost/cigate-base:bookworm -f deploy/Dockerfile .
set -euo pipefail

TAG="${1:-localhost/cigate-base:bookworm}"
MIRROR="${2:-http://deb.debian.org/debian}"
# python3-venv brings ensurepip (pip into the image's venv); ca-certificates for https upstreams.
PACKAGES="python3.11,python3-venv,ca-certificates,tzdata"
# Extra podman flags, e.g. PODMAN_FLAGS="--storage-driver vfs" inside a sandbox.
read -r -a PODMAN_FLAGS <<<"${PODMAN_FLAGS:-}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"

debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR"

# Slim it: no apt lists, caches, docs or man pages in the image.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
# The image's own resolver is given by the runtime.
: >"$root/etc/resolv.conf"

tar --numeric-owner --xattrs -C "$root" -c . |
    podman "${PODMAN_FLAGS[@]}" import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$TAG"
echo "imported $TAG"
