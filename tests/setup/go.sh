# Sourced by tests/run-all: tests/compat/go/ built into one binary that drives the official
# `github.com/openai/openai-go/v3` SDK (pinned with its checksums in tests/compat/go/go.mod and
# go.sum), for the SDK compatibility tests (dataplane/tests/compat.rs).
#
# Cached as "$SLUICE_CACHE/go-compat-<hash of go.mod, go.sum, *.go and `go version`>/", built once,
# then reused as is; editing the client or its pins builds a new one. Go's module and build
# caches are "$SLUICE_CACHE/go-mod" and "$SLUICE_CACHE/go-build", shared by those builds, so a
# changed client builds in seconds. Exports
#   SLUICE_GO_COMPAT   the client binary
# Needs go >= 1.26 on PATH (what openai-go v3.100 requires).
# A developer can `source tests/setup/go.sh` before `cargo test`.
_sluice_go_setup() {
  local dir cache hash target
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../compat/go" && pwd)"
  if ! command -v go >/dev/null; then
    echo "go.sh: go (>= 1.26) must be on PATH" >&2
    return 1
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  hash=$( (cd "$dir" && cat go.mod go.sum ./*.go && go version) | sha256sum | cut -c1-12)
  target="$cache/go-compat-$hash"
  # The marker is written last: a build without it was interrupted half-way and is redone.
  # The lock makes parallel runs wait for one build instead of racing.
  if [ ! -e "$target/.sluice-complete" ]; then
    mkdir -p "$cache"
    (
      flock 9
      if [ ! -e "$target/.sluice-complete" ]; then
        echo "go.sh: building $target (a few minutes the first time)" >&2
        rm -rf "$target" &&
          mkdir -p "$target" &&
          (cd "$dir" && GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" GOTOOLCHAIN=local \
            GOFLAGS="-mod=readonly -modcacherw" CGO_ENABLED=0 \
            go build -trimpath -o "$target/sluice-compat-go" .) &&
          touch "$target/.sluice-complete"
      fi
    ) 9>"$target.lock" || return 1
  fi
  export SLUICE_GO_COMPAT="$target/sluice-compat-go"
}
_sluice_go_setup || { unset -f _sluice_go_setup; return 1; }
unset -f _sluice_go_setup
