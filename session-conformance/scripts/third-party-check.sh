#!/usr/bin/env bash
# Builds a crate outside this workspace, in a temp dir, that depends only on session-conformance
# and session-core (by path, as a third party would by version), implements the toy store of
# tests/toy_store.rs and runs the whole suite on it. Fails if its dependency tree holds the
# workspace's harness (process control, TLS material, cluster orchestration) or anything that
# starts processes or talks TLS.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/tests"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "toy-session-store"
version = "0.1.0"
edition = "2021"
publish = false

[dev-dependencies]
session-conformance = { path = "$here" }
session-core = { path = "$root/session-core", features = ["testing"] }

[[test]]
name = "conformance"
harness = false
TOML
mkdir -p "$dir/src"
echo '//! A toy store lives in tests/conformance.rs.' > "$dir/src/lib.rs"
cp "$here/tests/toy_store.rs" "$dir/tests/conformance.rs"
# The workspace's lock file, so that the versions are the ones the workspace tested.
cp "$root/Cargo.lock" "$dir/Cargo.lock"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/third-party-check"

tree="$(cd "$dir" && cargo tree --edges normal,dev --prefix none --format '{p}' | sort -u)"
forbidden='^(session-test-harness|session-redis|session-sql|session-memcached|session-mongo|session-memory|rustls|openssl|tokio-rustls|testcontainers|bollard) '
if grep -E "$forbidden" <<<"$tree"; then
  echo "third-party check: the suite pulls in harness, store or TLS crates (above)" >&2
  exit 1
fi
if (cd "$dir" && cargo tree -e features -i tokio 2>/dev/null | grep -q '"process"'); then
  echo "third-party check: tokio's process feature is on: something can start processes" >&2
  exit 1
fi
echo "third-party check: $(wc -l <<<"$tree") crates, none of the harness's"
(cd "$dir" && cargo test --quiet --test conformance)
