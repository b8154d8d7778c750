#!/usr/bin/env bash
# Makes local Docker images of the servers the tests need, from the Debian packages installed
# on this machine, for machines that reach no image registry. One image holds redis-server,
# memcached, PostgreSQL and MariaDB (the files of their packages and dependencies, no docs) and
# an entrypoint that speaks the official images' language: `postgres …` initialises a data dir
# (trust auth) and runs as the postgres user, `mariadbd …` installs one (root without password,
# the database named by MARIADB_DATABASE), anything else runs as given. Tagged once per backend:
#   local/session-redis:debian12, local/session-memcached:debian12,
#   local/session-postgres:debian12, local/session-mariadb:debian12
# The harness uses them when SESSION_TEST_<BACKEND>_IMAGE names them (see .ci/run).
set -euo pipefail
tag="${1:-debian12}"
packages=(redis-server memcached postgresql-15 mariadb-server
  dash coreutils util-linux sed grep hostname findutils mawk libc-bin)
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

closure=$(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${packages[@]}" 2>/dev/null \
  | grep -v '^ ' | grep -v '<' | sort -u)
# Debian 12 merges /usr: /bin, /sbin and /lib are links into it. The links first, then the
# files (directories come with them) under their /usr names, without documentation.
: > "$root/files"
for link in bin sbin lib lib64; do
  if [ -L "/$link" ]; then echo "/$link" >> "$root/files"; fi
done
for package in $closure; do dpkg -L "$package" 2>/dev/null || true; done \
  | grep '^/' | sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#' \
  | grep -vE '^/usr/share/(doc|man|info|locale|lintian)/' | sort -u \
  | while read -r path; do if [ -f "$path" ] || [ -L "$path" ]; then echo "$path"; fi; done \
  >> "$root/files"
mkdir -p "$root/fs"
cut -c2- "$root/files" | tar -C / --no-recursion -cf - -T - | tar -C "$root/fs" -xf -

# Users and directories the servers expect.
grep -E '^(root|nobody|postgres|mysql|memcache|redis):' /etc/passwd > "$root/fs/etc/passwd"
grep -E '^(root|nogroup|postgres|mysql|memcache|redis|ssl-cert):' /etc/group > "$root/fs/etc/group"
mkdir -p "$root/fs/tmp" "$root/fs/var/lib/postgresql" "$root/fs/var/lib/mysql" "$root/fs/run/mysqld"
chmod 1777 "$root/fs/tmp"
chown "$(id -u postgres):$(id -g postgres)" "$root/fs/var/lib/postgresql"
chown "$(id -u mysql):$(id -g mysql)" "$root/fs/var/lib/mysql" "$root/fs/run/mysqld"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"

mkdir -p "$root/fs/usr/local/bin"
cat > "$root/fs/usr/local/bin/docker-entrypoint.sh" <<SCRIPT
#!/bin/sh
set -e
case "\$1" in
  postgres)
    shift
    data=/var/lib/postgresql/data
    as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"
    if [ ! -s "\$data/PG_VERSION" ]; then
      \$as_postgres $pg_bin/initdb -D "\$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 -N >/dev/null
    fi
    exec \$as_postgres $pg_bin/postgres -D "\$data" -k /tmp "\$@"
    ;;
  mariadbd)
    shift
    data=/var/lib/mysql
    if [ ! -d "\$data/mysql" ]; then
      mariadb-install-db --no-defaults --datadir="\$data" --user=mysql \
        --auth-root-authentication-method=normal --skip-test-db >/dev/null
      if [ -n "\${MARIADB_DATABASE:-}" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \\\`\$MARIADB_DATABASE\\\`;" \
          | mariadbd --no-defaults --bootstrap --datadir="\$data" --user=mysql >/dev/null 2>&1
      fi
    fi
    exec mariadbd --no-defaults --datadir="\$data" --user=mysql --socket=/run/mysqld/mysqld.sock "\$@"
    ;;
  *)
    exec "\$@"
    ;;
esac
SCRIPT
chmod 755 "$root/fs/usr/local/bin/docker-entrypoint.sh"

tar -C "$root/fs" -cf "$root/image.tar" .
docker import --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  "$root/image.tar" "local/session-servers:$tag" >/dev/null
for backend in redis memcached postgres mariadb; do
  docker tag "local/session-servers:$tag" "local/session-$backend:$tag"
done
echo "made local/session-{redis,memcached,postgres,mariadb}:$tag ($(du -sh "$root/image.tar" | cut -f1))"
