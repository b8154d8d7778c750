#!/usr/bin/env bash
# Builds Valkey (the Redis fork) from Debian's pinned source tarball, once, and prints the
# directory of its programs. session-redis's suite runs on it beside Redis 7.0 (CI puts that
# directory first on PATH: Valkey installs `redis-server` and `redis-cli` as links to its own
# programs, so the harness starts it as it starts Redis).
#
# Why from source: no registry here has a Valkey that has `SET … IFEQ` (8.1+) and runs on
# Debian 12. bookworm-backports has 8.0; trixie's 8.1 packages need glibc 2.38. Debian's
# tarball is the upstream release with its bundled dependencies; the checksum is the one in
# trixie's Sources index. Building takes ~1.5 min on 2 cores.
set -euo pipefail
version=8.1.1
tarball="valkey_${version}+dfsg1.orig.tar.xz"
sha256=d9bbd82eecb82f359e649a0007ad3dc1b47cc15afa626348ca86b73c4ae2c7ee
url="http://deb.debian.org/debian/pool/main/v/valkey/$tarball"
prefix="${XDG_CACHE_HOME:-$HOME/.cache}/session-tests/valkey-$version"
if [ ! -x "$prefix/bin/valkey-server" ] || [ ! -e "$prefix/installed" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "building Valkey $version into $prefix" >&2
  curl -fsS --retry 3 -o "$work/$tarball" "$url"
  echo "$sha256  $work/$tarball" | sha256sum -c --quiet -
  tar -xJf "$work/$tarball" -C "$work"
  rm -rf "$prefix"
  make -C "$work/valkey-$version" -j"$(nproc)" BUILD_TLS=yes >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log" >&2; exit 1; }
  make -C "$work/valkey-$version" install PREFIX="$prefix" >>"$work/build.log" 2>&1
  touch "$prefix/installed"
fi
echo "$prefix/bin"
