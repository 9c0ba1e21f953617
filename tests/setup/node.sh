# Sourced by tests/run-all: the official Node SDKs `openai` and `@anthropic-ai/sdk`, at the exact
# versions of tests/compat/node/package.json and package-lock.json, for the SDK compatibility
# tests (dataplane/tests/compat.rs runs tests/compat/node/*.mjs with them).
#
# Cached as "$SLUICE_CACHE/node-<hash of package.json + package-lock.json>", installed once with
# `npm ci` (npm's own cache in "$SLUICE_CACHE/npm-cache"), then reused as is; editing either file
# makes a new one. Exports
#   SLUICE_NODE_MODULES   that install's node_modules folder
# Needs node >= 20 (what both SDKs support) and npm on PATH.
# A developer can `source tests/setup/node.sh` before `cargo test`.
_sluice_node_setup() {
  local dir cache hash target major
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../compat/node" && pwd)"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node.sh: node (>= 20) and npm must be on PATH" >&2
    return 1
  fi
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    echo "node.sh: node $(node --version) is too old: the SDKs need node >= 20" >&2
    return 1
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  hash=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-12)
  target="$cache/node-$hash"
  # The marker is written last: an install without it was interrupted half-way and is redone.
  # The lock makes parallel runs wait for one install instead of racing.
  if [ ! -e "$target/.sluice-complete" ]; then
    mkdir -p "$cache"
    (
      flock 9
      if [ ! -e "$target/.sluice-complete" ]; then
        echo "node.sh: installing into $target" >&2
        rm -rf "$target" &&
          mkdir -p "$target" &&
          cp "$dir/package.json" "$dir/package-lock.json" "$target/" &&
          (cd "$target" && npm ci --prefer-offline --ignore-scripts --no-audit --no-fund --loglevel=error \
            --update-notifier=false --cache "$cache/npm-cache") &&
          touch "$target/.sluice-complete"
      fi
    ) 9>"$target.lock" || return 1
  fi
  export SLUICE_NODE_MODULES="$target/node_modules"
}
_sluice_node_setup || { unset -f _sluice_node_setup; return 1; }
unset -f _sluice_node_setup
