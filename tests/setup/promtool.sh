# Sourced by tests/run-all: Prometheus' promtool and server. Exports
#   SLUICE_PROMTOOL     path of a promtool binary, for the alert rules' checks and unit tests and
#                       the dashboard's PromQL (operator/tests/monitoring.rs)
#   SLUICE_PROMETHEUS   path of a prometheus server binary, which scrapes a real gateway for the
#                       dashboard preview (dataplane/tests/dashboard_preview)
#
# Order, for each: the variable if already set and executable; the binary on PATH; else Debian's
# `prometheus` package (it holds both), downloaded once with `apt-get download` into
# "$SLUICE_CACHE/prometheus-<version>" and unpacked there with `dpkg -x` (static Go binaries
# needing only libc; the web assets and service files are dropped), so later runs need no apt at
# all. That takes seconds, where building them from Prometheus' Go modules pulls every
# service-discovery SDK and takes many minutes on two cores. (Older runs kept only promtool, in
# "$SLUICE_CACHE/promtool-<version>"; those folders are no longer read.)
# A developer can `source tests/setup/promtool.sh` before `cargo test -p sluice-operator --test monitoring`.
_sluice_prometheus_setup() {
  local found cache version dir tool
  for tool in promtool prometheus; do
    local variable="SLUICE_${tool^^}"
    if [ -n "${!variable:-}" ] && [ -x "${!variable}" ]; then
      continue
    fi
    found=$(command -v "$tool" || true)
    if [ -n "$found" ]; then
      export "$variable=$found"
    else
      unset "$variable"
    fi
  done
  if [ -n "${SLUICE_PROMTOOL:-}" ] && [ -n "${SLUICE_PROMETHEUS:-}" ]; then
    return 0
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  mkdir -p "$cache"
  # The newest complete unpack, so a machine without apt lists still finds it.
  newest() {
    ls -d "$cache"/prometheus-*/ 2>/dev/null | while read -r d; do
      [ -e "$d/.sluice-complete" ] && echo "${d%/}"; done | sort | tail -n 1
  }
  dir=$(newest)
  if [ -z "$dir" ]; then
    (
      flock 9
      if [ -z "$(ls "$cache"/prometheus-*/.sluice-complete 2>/dev/null)" ]; then
        echo "promtool.sh: fetching Debian's prometheus package into $cache" >&2
        apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq >&2 || exit 1
        version=$(apt-cache policy prometheus | sed -n 's/ *Candidate: //p' | sed 's/^[0-9]*://')
        [ -n "$version" ] && [ "$version" != "(none)" ] || { echo "promtool.sh: no prometheus package" >&2; exit 1; }
        dir="$cache/prometheus-$version"
        rm -rf "$dir" "$dir.debs"
        mkdir -p "$dir.debs" "$dir/root" "$dir/bin"
        (cd "$dir.debs" && apt-get download -qq -o APT::Sandbox::User=root prometheus >&2) || exit 1
        dpkg -x "$dir.debs"/prometheus_*.deb "$dir/root" || exit 1
        # Only the two binaries are kept: the tests serve no web console and install no service.
        mv "$dir/root/usr/bin/promtool" "$dir/root/usr/bin/prometheus" "$dir/bin/" || exit 1
        rm -rf "$dir/root" "$dir.debs"
        "$dir/bin/promtool" --version >&2 && "$dir/bin/prometheus" --version >&2 || exit 1
        touch "$dir/.sluice-complete"
      fi
    ) 9>"$cache/prometheus.lock" || { unset -f newest; return 1; }
    dir=$(newest)
  fi
  unset -f newest
  [ -n "$dir" ] || { echo "promtool.sh: no promtool or prometheus found or unpacked" >&2; return 1; }
  [ -n "${SLUICE_PROMTOOL:-}" ] || export SLUICE_PROMTOOL="$dir/bin/promtool"
  [ -n "${SLUICE_PROMETHEUS:-}" ] || export SLUICE_PROMETHEUS="$dir/bin/prometheus"
}
_sluice_prometheus_setup || { unset -f _sluice_prometheus_setup; return 1; }
unset -f _sluice_prometheus_setup
