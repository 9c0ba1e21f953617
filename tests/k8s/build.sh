#!/usr/bin/env bash
# Builds the real Kubernetes control plane that Sluice's cluster tests run against: kube-apiserver
# and kube-controller-manager from the k8s.io/kubernetes module, and etcd from go.etcd.io/etcd,
# all from the Go module proxy (no release download, no Docker). The binaries land in a cache
# outside the clone, keyed by version and by a hash of this recipe, and are reused when present.
#
#   tests/k8s/build.sh          # build or reuse; prints the bin directory on stdout (logs on stderr)
#   tests/k8s/build.sh --pin    # after changing the versions below: regenerate kube/ and etcd/ go.mod
#
# Why a module of our own: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at
# v0.0.0 and replaces them with local folders, so `go install k8s.io/kubernetes/cmd/...@v1.X.Y`
# cannot resolve them; kube/go.mod requires k8s.io/kubernetes and replaces each staging module with
# its matching v0.X.Y release. go.etcd.io/etcd/server/v3 has replace directives too, hence etcd/.
#
# Cache: ${SLUICE_CACHE:-$HOME/.cache/sluice}/kube/<kube>-etcd<etcd>-<recipe hash>/bin/
# Go's own caches (GOMODCACHE, GOCACHE) keep their defaults; they are outside the clone as well.
set -euo pipefail

KUBE_VERSION=v1.34.10 # newest v1.34 patch the module proxy serves and the checksum database verifies
KUBE_DATE=2026-07-22T22:05:06Z # the tag's time (from the proxy's .info), for /version's buildDate
ETCD_VERSION=v3.6.5   # the etcd that Kubernetes v1.34 ships with (build/dependencies.yaml)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Our go.mod and go.sum decide every version (readonly), with the Go that is installed (local),
# as upstream builds these binaries (static, CGO off), stamped with nothing of this clone's VCS.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off

log() { echo "k8s/build.sh: $*" >&2; }

staging_modules() {
  # The staging modules are the k8s.io/* paths that k8s.io/kubernetes's go.mod replaces locally.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -n "$gomod" ] || { log "cannot find go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod"
}

pin() {
  local minor=v0.${KUBE_VERSION#v1.} mod
  log "pinning k8s.io/kubernetes $KUBE_VERSION (staging modules at $minor), etcd $ETCD_VERSION"
  cd "$here/kube"
  rm -f go.mod go.sum
  go mod init sluice.dev/tests/k8s/kube
  # Same language version and GODEBUG defaults as upstream's own go.mod for this release.
  go mod edit -go=1.24.0 -godebug=default=go1.24 -require="k8s.io/kubernetes@$KUBE_VERSION"
  for mod in $(staging_modules); do
    go mod edit -replace="$mod=$mod@$minor"
  done
  go mod edit -tool=k8s.io/kubernetes/cmd/kube-apiserver -tool=k8s.io/kubernetes/cmd/kube-controller-manager
  GOFLAGS="-mod=mod -buildvcs=false" go mod tidy
  cd "$here/etcd"
  rm -f go.mod go.sum
  go mod init sluice.dev/tests/k8s/etcd
  go mod edit -go=1.24 -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  # The server module's root package is etcd's main (`etcdmain.Main(os.Args)`).
  go mod edit -tool=go.etcd.io/etcd/server/v3
  GOFLAGS="-mod=mod -buildvcs=false" go mod tidy
  log "pinned; commit tests/k8s/kube/go.{mod,sum} and tests/k8s/etcd/go.{mod,sum}"
}

recipe_hash() {
  { cat "$here/build.sh" "$here"/kube/go.mod "$here"/kube/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum
    go version; } | sha256sum | cut -c1-12
}

build() {
  local cache=${SLUICE_CACHE:-$HOME/.cache/sluice}/kube
  local name="$KUBE_VERSION-etcd${ETCD_VERSION#v}-$(recipe_hash)"
  local dest="$cache/$name"
  if [ -f "$dest/complete" ]; then
    log "reusing $dest/bin ($(cat "$dest/complete"))"
    echo "$dest/bin"
    return
  fi
  mkdir -p "$cache"
  # One build at a time per cache: a second caller waits, then finds the result.
  exec 9>"$cache/.lock"
  if command -v flock >/dev/null && ! flock -n 9; then
    log "another build holds $cache/.lock; waiting for it"
    flock 9
  fi
  if [ -f "$dest/complete" ]; then
    log "reusing $dest/bin (built meanwhile)"
    echo "$dest/bin"
    return
  fi
  local tmp="$cache/.building-$name"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  local start=$SECONDS
  log "building kube-apiserver and kube-controller-manager $KUBE_VERSION into $tmp (first run: ~5 min, ~2 GiB of memory on 2 cores)"
  local minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$KUBE_DATE"
  done
  (cd "$here/kube" && go build -trimpath -ldflags="$ldflags" -o "$tmp/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  log "building etcd $ETCD_VERSION"
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3)
  local versions
  # Captured whole: `| head -1` would end etcd with SIGPIPE, which pipefail turns into a failure.
  versions=$("$tmp/bin/kube-apiserver" --version && "$tmp/bin/etcd" --version)
  log "$(echo "$versions" | grep -E '^(Kubernetes|etcd Version)' | tr '\n' ' ')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start))s with $(go version | cut -d' ' -f3)" >"$tmp/complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  # Builds of the same versions by an older recipe are superseded (each is ~220 MB).
  local old
  for old in "$cache/$KUBE_VERSION-etcd${ETCD_VERSION#v}-"*; do
    if [ "$old" != "$dest" ] && [ -d "$old" ]; then
      log "removing superseded build $old"
      rm -rf "$old"
    fi
  done
  log "built in $((SECONDS - start))s: $dest/bin"
  echo "$dest/bin"
}

case "${1:-}" in
  --pin) pin ;;
  "") build ;;
  *) log "usage: $0 [--pin]"; exit 2 ;;
esac
