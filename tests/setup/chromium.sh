# Sourced by tests/run-all: a real headless Chromium for the browser tests (the console's,
# dataplane/tests/console_browser.rs, and the dashboard preview's screenshots,
# dataplane/tests/dashboard_preview; driven by Playwright from tests/setup/python.sh's venv;
# Playwright's own browser downloads are never used). Exports
#   SLUICE_CHROMIUM   path of a chromium binary
#
# Order: $SLUICE_CHROMIUM if already set and executable; chromium (or chromium-browser) on PATH;
# else Debian's `chromium` package, installed with apt-get (as root). The installed version is
# recorded in "$SLUICE_CACHE/chromium-<version>.ok" once it has started headless, so later runs
# only check the binary. A developer can `source tests/setup/chromium.sh` before `cargo test`.
_sluice_chromium_setup() {
  local found cache version
  if [ -n "${SLUICE_CHROMIUM:-}" ] && [ -x "$SLUICE_CHROMIUM" ]; then
    return 0
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  mkdir -p "$cache"
  found=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$found" ]; then
    (
      flock 9
      if ! command -v chromium >/dev/null; then
        echo "chromium.sh: installing Debian's chromium" >&2
        [ "$(id -u)" = 0 ] || { echo "chromium.sh: apt-get needs root; install chromium or set SLUICE_CHROMIUM" >&2; exit 1; }
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 || exit 1
      fi
    ) 9>"$cache/chromium.lock" || return 1
    found=$(command -v chromium || true)
  fi
  [ -n "$found" ] || { echo "chromium.sh: no chromium found or installed" >&2; return 1; }
  version=$("$found" --version 2>/dev/null | awk '{print $2}')
  if [ ! -e "$cache/chromium-$version.ok" ]; then
    "$found" --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 ||
      { echo "chromium.sh: $found does not start headless" >&2; return 1; }
    touch "$cache/chromium-$version.ok"
  fi
  export SLUICE_CHROMIUM="$found"
}
_sluice_chromium_setup || { unset -f _sluice_chromium_setup; return 1; }
unset -f _sluice_chromium_setup
