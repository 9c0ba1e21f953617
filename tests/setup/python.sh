# Sourced by tests/run-all: a Python virtualenv with the SDKs of tests/sdk/python/requirements.txt
# (the official openai and anthropic packages), for the SDK compatibility tests, and Playwright,
# which drives the system Chromium of tests/setup/chromium.sh in the browser tests (the console's
# and the dashboard preview's).
#
# Cached as "$SLUICE_CACHE/venv-<hash of requirements.txt>": created once (a few seconds with a
# warm pip cache), then reused as is; editing requirements.txt makes a new one. Exports
#   SLUICE_PYTHON   the venv's python, read by simulator/tests/sdk_python.rs
# Needs python3 >= 3.9 with the venv module (SLUICE_PYTHON_BASE picks another interpreter).
# A developer can `source tests/setup/python.sh` before `cargo test`.
_sluice_python_setup() {
  local requirements hash venv base
  requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")/../sdk/python" && pwd)/requirements.txt"
  hash=$(sha256sum "$requirements" | cut -c1-12)
  venv="${SLUICE_CACHE:-$HOME/.cache/sluice}/venv-$hash"
  base="${SLUICE_PYTHON_BASE:-python3}"
  # The marker is written last: a venv without it was interrupted half-way and is rebuilt.
  # The lock makes parallel runs wait for one build instead of racing.
  if [ ! -e "$venv/.sluice-complete" ]; then
    mkdir -p "$(dirname "$venv")"
    (
      flock 9
      if [ ! -e "$venv/.sluice-complete" ]; then
        echo "python.sh: creating $venv" >&2
        rm -rf "$venv"
        "$base" -m venv "$venv" &&
          "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" &&
          touch "$venv/.sluice-complete"
      fi
    ) 9>"$venv.lock" || return 1
  fi
  export SLUICE_PYTHON="$venv/bin/python"
}
_sluice_python_setup || { unset -f _sluice_python_setup; return 1; }
unset -f _sluice_python_setup
