#!/usr/bin/env bash
# Builds a Redis-protocol server from Debian's pinned source tarball, once, and prints the
# directory of its programs: `valkey` (Valkey 8.1, `SET … IFEQ`) or `redis` (Redis 8.6,
# `SET … IFDEQ`). session-redis's suites run on each beside Redis 7.0 (CI puts the directory
# first on PATH: both install `redis-server` and `redis-cli`, so the harness starts them as it
# starts Redis 7).
#
# Why from source: no registry here has a build of either that runs on Debian 12. Valkey 8.1
# is in trixie, whose packages need glibc 2.38; Redis 8.6 only in experimental. Debian's
# tarballs are the upstream releases with their bundled dependencies; the checksums are the
# ones in Debian's Sources indexes. Building takes ~1.5 min (Valkey) and ~2.5 min (Redis) on 2
# cores.
#
# Debian's pool keeps a tarball only while a suite lists its version. When the pinned one is
# gone (a newer point release replaced it), the newest tarball of the same major.minor that
# the suites below list is built instead, checked against the index's checksum, with a
# warning to move the pin: CI keeps running the same feature set rather than failing.
set -euo pipefail
case "${1:-}" in
  valkey)
    package=valkey version=8.1.1 tarball="valkey_8.1.1+dfsg1.orig.tar.xz"
    sha256=d9bbd82eecb82f359e649a0007ad3dc1b47cc15afa626348ca86b73c4ae2c7ee
    suites="trixie forky sid" pool=pool/main/v/valkey ;;
  redis)
    package=redis version=8.6.3 tarball="redis_8.6.3.orig.tar.gz"
    sha256=58d0d1eb49a1ea6c2179659707fec171b1e2e2b8d5157ed2ec59d1d66ad5a654
    suites="experimental sid forky" pool=pool/main/r/redis ;;
  *)
    echo "usage: $0 valkey|redis" >&2
    exit 2 ;;
esac
mirror=http://deb.debian.org/debian
cache="${XDG_CACHE_HOME:-$HOME/.cache}/session-tests"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The orig tarball and its sha256 of the newest $package of the same major.minor in a suite's
# Sources index, as "name sha256", or nothing.
listed() {
  curl -fsS --retry 3 "$mirror/dists/$1/main/source/Sources.xz" | xz -dc |
    awk -v pkg="$package" -v prefix="${package}_${version%.*}." '
      /^Package: / { this = ($2 == pkg) }
      this && /^Checksums-Sha256:/ { sums = 1; next }
      this && sums && /^ / { if (index($3, prefix) == 1 && $3 ~ /\.orig\.tar\./) print $3, $1; next }
      { sums = 0 }' |
    sort -V | tail -1
}

# An existing build of the pinned version, or of the one that replaced it.
for built in "$cache/$package-$version" "$cache/$package-${version%.*}".*; do
  if [ -x "$built/bin/redis-server" ] && [ -e "$built/installed" ]; then
    echo "$built/bin"
    exit 0
  fi
done

if ! curl -fsS --retry 3 -o "$work/$tarball" "$mirror/$pool/$tarball"; then
  found=""
  for suite in $suites; do
    found="$(listed "$suite")" && [ -n "$found" ] && break
  done
  if [ -z "$found" ]; then
    echo "$tarball is gone from Debian's pool and no suite of $suites lists a $package ${version%.*}.x: update the pin in $0" >&2
    exit 1
  fi
  tarball="${found% *}" sha256="${found#* }"
  version="$(echo "$tarball" | sed -E "s/^${package}_([0-9]+(\.[0-9]+)*).*/\1/")"
  echo "warning: the pinned $package tarball is gone from Debian's pool; building $tarball instead (move the pin in $0)" >&2
  curl -fsS --retry 3 -o "$work/$tarball" "$mirror/$pool/$tarball"
fi
echo "$sha256  $work/$tarball" | sha256sum -c --quiet -
prefix="$cache/$package-$version"
echo "building $package $version into $prefix" >&2
mkdir "$work/source"
tar -xf "$work/$tarball" -C "$work/source"
# The tarball's one top directory (its name varies: valkey-8.1.1, redis-8.6.3).
source_dir="$(find "$work/source" -mindepth 1 -maxdepth 1 -type d)"
rm -rf "$prefix"
make -C "$source_dir" -j"$(nproc)" BUILD_TLS=yes >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log" >&2; exit 1; }
make -C "$source_dir" install PREFIX="$prefix" >>"$work/build.log" 2>&1
touch "$prefix/installed"
echo "$prefix/bin"
