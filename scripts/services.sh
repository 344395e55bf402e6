#!/usr/bin/env bash
# Make sure a service the tests need is running on loopback; install it first on a fresh Debian
# machine (needs root). Usage: scripts/services.sh postgres [redis packages ...]
set -euo pipefail

postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    cluster=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  # A role that can create the test database, with a password so it works with md5/scram as well
  # as trust authentication.
  su postgres -c "psql -qAt" >/dev/null <<'SQL'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fedsite') THEN
    CREATE ROLE fedsite LOGIN CREATEDB PASSWORD 'fedsite';
  END IF;
END$$;
SQL
  if ! su postgres -c "psql -qAt -c 'SELECT 1 FROM pg_database WHERE datname = \$\$fedsite\$\$'" | grep -q 1; then
    su postgres -c "createdb -O fedsite fedsite"
  fi
}

redis() {
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -p 6379 ping 2>/dev/null | grep -q PONG; then
    mkdir -p var/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
      --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
    for _ in $(seq 50); do redis-cli -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  fi
  echo "redis: redis://127.0.0.1:6379/0"
}

# Debian packages whose binaries the tests start themselves (redis-server, etcd, a headless browser).
packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v etcd >/dev/null || missing+=(etcd-server etcd-client)
  command -v chromium >/dev/null || missing+=(chromium)
  if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

[ $# -gt 0 ] || { echo "usage: $0 postgres|redis|packages|all ..." >&2; exit 2; }
for step in "$@"; do
  case "$step" in
    postgres) postgres ;;
    redis) redis ;;
    packages) packages ;;
    all) postgres; redis ;;
    *) echo "usage: $0 postgres|redis|packages|all ..." >&2; exit 2 ;;
  esac
done
