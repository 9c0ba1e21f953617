# Sourced by tests/run-all: promtool, for the alert rules' checks and unit tests and the
# dashboard's PromQL (operator/tests/monitoring.rs). Exports
#   SLUICE_PROMTOOL   path of a promtool binary
#
# Order: $SLUICE_PROMTOOL if already set and executable; promtool on PATH; else Debian's
# `prometheus` package, downloaded once with `apt-get download` into
# "$SLUICE_CACHE/promtool-<version>" and unpacked there with `dpkg -x` (promtool is a static Go
# binary needing only libc), so later runs need no apt at all. That takes seconds, where building
# github.com/prometheus/prometheus/cmd/promtool from Go modules pulls every service-discovery SDK
# and takes many minutes on two cores.
# A developer can `source tests/setup/promtool.sh` before `cargo test -p sluice-operator --test monitoring`.
_sluice_promtool_setup() {
  local found cache version dir newest
  if [ -n "${SLUICE_PROMTOOL:-}" ] && [ -x "$SLUICE_PROMTOOL" ]; then
    return 0
  fi
  found=$(command -v promtool || true)
  if [ -n "$found" ]; then
    export SLUICE_PROMTOOL="$found"
    return 0
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  mkdir -p "$cache"
  # The newest complete unpack, so a machine without apt lists still finds it.
  newest() {
    ls -d "$cache"/promtool-*/ 2>/dev/null | while read -r d; do
      [ -e "$d/.sluice-complete" ] && echo "${d%/}"; done | sort | tail -n 1
  }
  dir=$(newest)
  if [ -z "$dir" ]; then
    (
      flock 9
      if [ -z "$(ls "$cache"/promtool-*/.sluice-complete 2>/dev/null)" ]; then
        echo "promtool.sh: fetching Debian's prometheus package into $cache" >&2
        apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq >&2 || exit 1
        version=$(apt-cache policy prometheus | sed -n 's/ *Candidate: //p' | sed 's/^[0-9]*://')
        [ -n "$version" ] && [ "$version" != "(none)" ] || { echo "promtool.sh: no prometheus package" >&2; exit 1; }
        dir="$cache/promtool-$version"
        rm -rf "$dir" "$dir.debs"
        mkdir -p "$dir.debs" "$dir/root" "$dir/bin"
        (cd "$dir.debs" && apt-get download -qq -o APT::Sandbox::User=root prometheus >&2) || exit 1
        dpkg -x "$dir.debs"/prometheus_*.deb "$dir/root" || exit 1
        # Only promtool is kept: the server and its web assets are not needed.
        mv "$dir/root/usr/bin/promtool" "$dir/bin/promtool" || exit 1
        rm -rf "$dir/root" "$dir.debs"
        "$dir/bin/promtool" --version >&2 || exit 1
        touch "$dir/.sluice-complete"
      fi
    ) 9>"$cache/promtool.lock" || { unset -f newest; return 1; }
    dir=$(newest)
  fi
  unset -f newest
  [ -n "$dir" ] || { echo "promtool.sh: no promtool found or unpacked" >&2; return 1; }
  export SLUICE_PROMTOOL="$dir/bin/promtool"
}
_sluice_promtool_setup || { unset -f _sluice_promtool_setup; return 1; }
unset -f _sluice_promtool_setup
