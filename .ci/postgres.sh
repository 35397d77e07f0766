#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests (Debian's package), run as the
# non-root `postgres` user:  eval "$(bash .ci/postgres.sh start)"  ...  bash .ci/postgres.sh stop
# `start` prints the export of NAS_TEST_POSTGRES (the URL the tests use) and NAS_PG_DIR.
set -euo pipefail
PORT=${NAS_PG_PORT:-55432}
case "${1:-}" in
start)
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
  D=$(mktemp -d /tmp/nas-pg.XXXXXX)
  chown postgres:postgres "$D"
  as_pg() { su postgres -s /bin/bash -c "$1" >&2; }
  as_pg "$PGBIN/initdb -D $D/data -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null"
  as_pg "$PGBIN/pg_ctl -D $D/data -l $D/server.log -o '-p $PORT -k $D -c listen_addresses=127.0.0.1' -w start >/dev/null"
  as_pg "psql -q -h $D -p $PORT -U postgres -c \"CREATE USER nas WITH PASSWORD 'pg-s3cret-w0rd';\" -c \"CREATE DATABASE nas OWNER nas;\""
  echo "export NAS_PG_DIR=$D NAS_TEST_POSTGRES=postgresql://nas:pg-s3cret-w0rd@127.0.0.1:$PORT/nas"
  ;;
stop)
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
  su postgres -s /bin/bash -c "$PGBIN/pg_ctl -D $NAS_PG_DIR/data -m fast -w stop" >/dev/null
  rm -rf "$NAS_PG_DIR"
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
