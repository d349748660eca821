#!/usr/bin/env bash
# Builds the nmr image: a statically linked release binary (glibc, crt-static),
# staged with CA certificates and a passwd entry for the non-root user into
# target/docker/, then `podman build` (or `docker build`) of docker/Dockerfile.
#
# Usage: docker/build.sh [TAG]      (default tag: nmr)
# Env:   ENGINE=podman|docker (default: whichever is installed, podman first)
#        ENGINE_ARGS="..."    extra global flags for the engine (CI uses vfs storage)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-nmr}"
engine="${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}"
target="$(rustc -vV | sed -n 's/^host: //p')"

RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target"
binary="target/$target/release/nmr"
if ! ldd "$binary" 2>&1 | grep -Eq "statically linked|not a dynamic executable"; then
  echo "error: $binary is dynamically linked" >&2
  exit 1
fi

context=target/docker
rm -rf "$context"
mkdir -p "$context/rootfs/etc/ssl/certs" "$context/data/db" "$context/data/storage"
cp "$binary" "$context/rootfs/nmr"
cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
echo "nmr:x:65532:65532:nmr:/data:/nmr" > "$context/rootfs/etc/passwd"
echo "nmr:x:65532:" > "$context/rootfs/etc/group"

# shellcheck disable=SC2086
$engine ${ENGINE_ARGS:-} build --format docker -t "$tag" -f docker/Dockerfile "$context"
echo "built image $tag with $engine"
