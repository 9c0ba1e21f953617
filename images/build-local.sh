#!/usr/bin/env bash
# Builds Sluice's three images from the binaries cargo built here, without a registry or a
# Docker engine: `FROM scratch` with buildah, the binary and exactly the shared libraries it
# links (as the distroless `cc` runtime of ../Dockerfile provides them), CA certificates, a
# passwd entry for uid 65532. Then, if podman can run containers here, runs the gateway image
# on the embedded quickstart and asks it for a completion.
#
#   images/build-local.sh            # build (cargo build --release first if needed) and check
#   SLUICE_IMAGE_TAG=dev images/build-local.sh
#
# The Dockerfile at the root builds the same images for real (pinned Rust builder, distroless
# runtime); this script is the check that the binaries run as such images: docs/install.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${SLUICE_IMAGE_TAG:-local}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
command -v buildah >/dev/null || { echo "build-local.sh: needs buildah (apt-get install buildah podman)" >&2; exit 2; }

bins="$root/target/release"
for bin in sluice-gateway sluice-operator sluice-sim; do
  [ -x "$bins/$bin" ] || (cd "$root" && cargo build --release --locked -p sluice-gateway -p sluice-operator -p sluice-sim --bins)
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# rootfs <binary>: the binary, the libraries ldd names (and the loader), CA roots, passwd.
rootfs() {
  local bin=$1 dir=$work/$1
  mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp"
  cp "$bins/$bin" "$dir/usr/local/bin/"
  ldd "$bins/$bin" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" > "$dir/etc/passwd"
  echo "nonroot:x:65532:" > "$dir/etc/group"
  chmod 1777 "$dir/tmp"
  echo "$dir"
}

for bin in sluice-gateway sluice-operator sluice-sim; do
  dir=$(rootfs "$bin")
  container=$(buildah from scratch)
  buildah copy --quiet "$container" "$dir/" / >/dev/null
  buildah config \
    --entrypoint "[\"/usr/local/bin/$bin\"]" --cmd '' --user 65532:65532 \
    --label "org.opencontainers.image.title=$bin" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.source=https://github.com/sluice-dev/sluice" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    "$container"
  buildah commit --quiet "$container" "localhost/$bin:$tag" >/dev/null
  buildah rm "$container" >/dev/null
  echo "built localhost/$bin:$tag ($(buildah images --format '{{.Size}}' "localhost/$bin:$tag"))"
done

command -v podman >/dev/null || { echo "build-local.sh: podman not found; images built, not run" >&2; exit 0; }
# In sandboxes with a hybrid cgroup layout crun refuses to start containers ("cgroups in hybrid
# mode not supported") and raising limits is not permitted: prefer runc when it is there, and
# ask for limits no higher than the ones we run with.
runtime=${SLUICE_OCI_RUNTIME:-$(command -v runc >/dev/null && echo runc || true)}
podman_run() {
  podman ${runtime:+--runtime "$runtime"} run --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "$@"
}
echo "== podman run localhost/sluice-gateway:$tag --version (runtime: ${runtime:-default})"
podman_run --rm "localhost/sluice-gateway:$tag" --version
echo "== the gateway image on the embedded quickstart"
name=sluice-gateway-check-$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman_run -d --rm --name "$name" --network host "localhost/sluice-gateway:$tag" \
  --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 >/dev/null
trap 'podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/demo/assistant/v1/models" -H "Authorization: Bearer sl_demo_quickstartkey" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/demo/assistant/v1/chat/completions" \
  -H "Authorization: Bearer sl_demo_quickstartkey" -H "Content-Type: application/json" \
  -d '{"model": "demo-chat", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}'
echo
echo "== ok: the gateway image answers as uid $(podman inspect --format '{{.Config.User}}' "localhost/sluice-gateway:$tag")"
