#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer before the
# tests that need them (tests/service). Machines and CI normally start both before
# anything runs; this starts whichever is not answering, from the Debian packages, and
# leaves a running one alone. Exits non-zero with a clear message if one stays down.
set -uo pipefail

answers() {  # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() {  # name host port seconds
  local deadline=$((SECONDS + $4))
  until answers "$2" "$3"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "start_services: $1 is still not answering on $2:$3 after $4 s" >&2
      return 1
    fi
    sleep 0.5
  done
}

status=0

if ! answers 127.0.0.1 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    echo "start_services: starting PostgreSQL $version (cluster main)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for PostgreSQL 127.0.0.1 5432 30 || status=1
  else
    echo "start_services: PostgreSQL is not answering on 127.0.0.1:5432 and no Debian cluster was found (/etc/postgresql)" >&2
    status=1
  fi
fi

if ! answers 127.0.0.1 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "start_services: starting Redis on 127.0.0.1:6379"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for Redis 127.0.0.1 6379 15 || status=1
  else
    echo "start_services: Redis is not answering on 127.0.0.1:6379 and redis-server is not installed" >&2
    status=1
  fi
fi

exit "$status"
