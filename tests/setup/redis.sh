# Sourced by tests/run-all: a real redis-server for the shared-limits tests
# (dataplane/tests/redis_limits.rs). Exports
#   SLUICE_REDIS_SERVER   path of a redis-server (or valkey-server) binary
#
# Order: $SLUICE_REDIS_SERVER if already set and executable; redis-server or valkey-server on
# PATH; else Debian's packages (redis-tools and the libraries it needs that the system lacks),
# downloaded once with `apt-get download` into "$SLUICE_CACHE/redis-<version>" and unpacked there
# with `dpkg -x`, so later runs need no apt at all. The binary is run through a small wrapper
# that puts the unpacked libraries on LD_LIBRARY_PATH. Tests start their own server on a free
# loopback port with a temporary directory; nothing here starts one.
# A developer can `source tests/setup/redis.sh` before `cargo test -p sluice-gateway`.
_sluice_redis_setup() {
  local found cache version dir pkg
  if [ -n "${SLUICE_REDIS_SERVER:-}" ] && [ -x "$SLUICE_REDIS_SERVER" ]; then
    return 0
  fi
  found=$(command -v redis-server || command -v valkey-server || true)
  if [ -n "$found" ]; then
    export SLUICE_REDIS_SERVER="$found"
    return 0
  fi
  cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
  mkdir -p "$cache"
  # The newest cached unpack wins, so a machine without apt lists still finds it.
  dir=$(ls -d "$cache"/redis-*/ 2>/dev/null | while read -r d; do
    [ -e "$d/.sluice-complete" ] && echo "${d%/}"; done | sort | tail -n 1)
  if [ -z "$dir" ]; then
    (
      flock 9
      if [ -z "$(ls "$cache"/redis-*/.sluice-complete 2>/dev/null)" ]; then
        echo "redis.sh: fetching Debian's redis packages into $cache" >&2
        apt-cache policy redis-tools 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq >&2 || exit 1
        version=$(apt-cache policy redis-tools | sed -n 's/ *Candidate: //p' | sed 's/^[0-9]*://')
        [ -n "$version" ] && [ "$version" != "(none)" ] || { echo "redis.sh: no redis-tools package" >&2; exit 1; }
        dir="$cache/redis-$version"
        rm -rf "$dir" "$dir.debs"
        mkdir -p "$dir.debs"
        # redis-server is a name for redis-check-rdb in redis-tools; liblzf1 and libjemalloc2
        # are the libraries a slim Debian lacks (libc, libssl and libsystemd are there).
        for pkg in redis-tools liblzf1 libjemalloc2; do
          (cd "$dir.debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2) || exit 1
        done
        mkdir -p "$dir/root"
        for deb in "$dir.debs"/*.deb; do dpkg -x "$deb" "$dir/root" || exit 1; done
        # Debian's redis-server package only adds this link (and a service); the binary acts
        # as the server when its name says so.
        ln -s redis-check-rdb "$dir/root/usr/bin/redis-server"
        mkdir -p "$dir/bin"
        cat >"$dir/bin/redis-server" <<WRAP
#!/bin/sh
# Debian's redis-server, unpacked by tests/setup/redis.sh; its libraries sit beside it.
LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/redis-server" "\$@"
WRAP
        chmod +x "$dir/bin/redis-server"
        rm -rf "$dir.debs"
        "$dir/bin/redis-server" --version >&2 || exit 1
        touch "$dir/.sluice-complete"
      fi
    ) 9>"$cache/redis.lock" || return 1
    dir=$(ls -d "$cache"/redis-*/ 2>/dev/null | while read -r d; do
      [ -e "$d/.sluice-complete" ] && echo "${d%/}"; done | sort | tail -n 1)
  fi
  [ -n "$dir" ] || { echo "redis.sh: no redis-server found or unpacked" >&2; return 1; }
  export SLUICE_REDIS_SERVER="$dir/bin/redis-server"
}
_sluice_redis_setup || { unset -f _sluice_redis_setup; return 1; }
unset -f _sluice_redis_setup
