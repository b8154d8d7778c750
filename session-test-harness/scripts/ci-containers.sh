#!/usr/bin/env bash
# The suites of Redis, PostgreSQL, MariaDB and Memcached (and the harness's container tests)
# with every server in a Docker container, on a machine without a registry: starts a daemon
# with its data in a temp dir, makes the images from the installed packages, runs the tests
# with SESSION_TEST_PROVISION=docker, checks that no socket outside loopback appeared and no
# container is left, and stops the daemon. The daemon has no bridge, so containers share the
# host network and their servers bind 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
docker_dir="$(mktemp -d)"
export DOCKER_HOST="unix://$docker_dir/docker.sock"
stop_docker() {
  if [ -s "$docker_dir/pid" ]; then kill "$(cat "$docker_dir/pid")" 2>/dev/null || true; fi
  for _ in $(seq 50); do [ -e "$docker_dir/pid" ] || break; sleep 0.2; done
  rm -rf "$docker_dir" 2>/dev/null || true
}
trap stop_docker EXIT
dockerd --bridge=none --iptables=false --data-root "$docker_dir/root" \
  --exec-root "$docker_dir/exec" -H "$DOCKER_HOST" --pidfile "$docker_dir/pid" \
  > "$docker_dir/log" 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
if ! docker info >/dev/null 2>&1; then
  echo "docker: the daemon did not start, no container pass: $(tail -1 "$docker_dir/log")"
  # A failure only where every backend is required (CI).
  [ -z "${SESSION_TEST_REQUIRE:-}" ]
  exit
fi
session-test-harness/scripts/make-local-images.sh debian12
session-test-harness/scripts/loopback-watch.sh start "$docker_dir/sockets"
# What `docker ps` shows during the run, sampled every second.
(while [ -e "$docker_dir/sockets.pid" ]; do
   docker ps --format '{{.ID}} {{.Image}}' >> "$docker_dir/ps" 2>/dev/null || true
   sleep 1
 done) &
SESSION_TEST_PROVISION=docker SESSION_TEST_DOCKER_NETWORK=host \
  SESSION_TEST_REDIS_IMAGE=local/session-redis:debian12 \
  SESSION_TEST_MEMCACHED_IMAGE=local/session-memcached:debian12 \
  SESSION_TEST_POSTGRES_IMAGE=local/session-postgres:debian12 \
  SESSION_TEST_MYSQL_IMAGE=local/session-mariadb:debian12 \
  SESSION_TEST_REQUIRE=redis,memcached,postgres,mysql \
  cargo test -p session-redis -p session-sql -p session-memcached -p session-test-harness
session-test-harness/scripts/loopback-watch.sh check "$docker_dir/sockets"
echo "docker ps during the run: containers seen per image:"
sort -u "$docker_dir/ps" | awk '{print $2}' | sort | uniq -c
# Each container's watchdog removes it within a second or two of its test process's exit.
for _ in $(seq 40); do [ -z "$(docker ps -aq)" ] && break; sleep 0.5; done
left="$(docker ps -aq | wc -l)"
echo "docker: $left containers left after the run"
[ "$left" -eq 0 ]
