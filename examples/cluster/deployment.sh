#!/usr/bin/env bash
# docs/cluster.md's deployment on one machine, to try it: a PostgreSQL primary with a synchronous standby,
# and three mailslot nodes whose DSN names both servers (target_session_attrs=read-write), so they follow
# a failover on their own. tests/cluster/test_deployment.py runs the same layout in CI.
#
#   examples/cluster/deployment.sh up             # initdb, standby, 3 nodes (AMQP 5701-5703, HTTP 15701-15703)
#   examples/cluster/deployment.sh status         # which server is the primary, replication, the nodes
#   examples/cluster/deployment.sh failover       # kill -9 the primary, promote the standby
#   examples/cluster/deployment.sh rebuild-standby  # then: a new synchronous standby on the lost server's port
#   examples/cluster/deployment.sh standby-stop   # commits (so confirms) wait ...
#   examples/cluster/deployment.sh standby-start  # ... until it is back
#   examples/cluster/deployment.sh down           # stop everything, remove $DIR
#
# Publish with confirms to any node meanwhile (e.g. `mailslot spike --url amqp://guest:guest@127.0.0.1:5701/`)
# and watch the pause. Settings: DIR, PGBIN, PG_PORTS ("5441 5442"), MAILSLOT (the command), LEASE_TTL,
# AMQP_BASE and HTTP_BASE (node i listens on AMQP_BASE+i and HTTP_BASE+i).
set -euo pipefail

DIR=${DIR:-/tmp/mailslot-deployment}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
read -r PORT_A PORT_B <<<"${PG_PORTS:-5441 5442}"
MAILSLOT=${MAILSLOT:-mailslot}
LEASE_TTL=${LEASE_TTL:-10}
AMQP_BASE=${AMQP_BASE:-5700}
HTTP_BASE=${HTTP_BASE:-15700}
DSN="postgresql://postgres@127.0.0.1:$PORT_A,127.0.0.1:$PORT_B/postgres?target_session_attrs=read-write"
export MAILSLOT_CLUSTER_SECRET=${MAILSLOT_CLUSTER_SECRET:-try-the-deployment-secret-0123456789}

# PostgreSQL refuses to run as root: then its commands run as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtc "$2"; }
pg_start() {  # data dir, port
  as_pg "$PGBIN/pg_ctl" -D "$DIR/$1" -l "$DIR/$1.log" -w start \
    -o "-c port=$2 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR -c synchronous_commit=on"
}
primary_port() {
  for port in "$PORT_A" "$PORT_B"; do
    [ "$(sql "$port" 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && { echo "$port"; return; }
  done
  return 1
}
data_of() { [ "$1" = "$PORT_A" ] && echo pg-a || echo pg-b; }
clone_standby() {  # primary's port: a synchronous standby of it on the other port
  local standby; standby=$(other_port "$1")
  as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$1" -U postgres -D "$DIR/$(data_of "$standby")" -X stream \
    --checkpoint=fast
  as_pg touch "$DIR/$(data_of "$standby")/standby.signal"
  echo "primary_conninfo = 'host=127.0.0.1 port=$1 user=postgres application_name=standby1'" \
    | as_pg tee -a "$DIR/$(data_of "$standby")/postgresql.auto.conf" >/dev/null
  pg_start "$(data_of "$standby")" "$standby"
  # Set after the clone, so the standby, once promoted, does not wait for a standby of its own.
  sql "$1" "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" && sql "$1" 'SELECT pg_reload_conf()' >/dev/null
  # The walsender turns 'sync' once it has read the reloaded setting: wait for it (5 s at most).
  for _ in $(seq 50); do
    [ "$(sql "$1" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")" = sync ] && return
    sleep 0.1
  done
  echo "the standby did not become synchronous:"; sql "$1" "SELECT application_name, state, sync_state FROM pg_stat_replication"
  exit 1
}
wait_started() {  # node number: until its log says it serves (30 s at most)
  for _ in $(seq 150); do grep -q "storing messages" "$DIR/n$1.log" && return; sleep 0.2; done
  echo "n$1 did not start:"; tail "$DIR/n$1.log"; exit 1
}
other_port() { [ "$1" = "$PORT_A" ] && echo "$PORT_B" || echo "$PORT_A"; }

case "${1:-}" in
up)
  mkdir -p "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
  as_pg "$PGBIN/initdb" -D "$DIR/pg-a" -U postgres -A trust --no-instructions >/dev/null
  pg_start pg-a "$PORT_A"
  clone_standby "$PORT_A"
  for i in 1 2 3; do
    mkdir -p "$DIR/n$i"
    nohup "$MAILSLOT" serve --store postgres --postgres-dsn "$DSN" --cluster --node-name "n$i" \
      --lease-ttl "$LEASE_TTL" --cluster-link "unix:$DIR/n$i.sock" --host 127.0.0.1 --port "$((AMQP_BASE + i))" \
      --http-port "$((HTTP_BASE + i))" --prometheus-port 0 --data-dir "$DIR/n$i" >"$DIR/n$i.log" 2>&1 &
    echo $! >"$DIR/n$i.pid"
    # n1 creates the schema: the others start once it serves.
    if [ "$i" = 1 ]; then wait_started 1; fi
  done
  wait_started 2 && wait_started 3 && "$0" status
  ;;
status)
  primary=$(primary_port) || { echo "no primary is up"; exit 1; }
  echo "primary: port $primary; its synchronous standby:"
  sql "$primary" "SELECT application_name, state, sync_state FROM pg_stat_replication"
  for i in 1 2 3; do
    printf 'n%s: ' "$i"; kill -0 "$(cat "$DIR/n$i.pid")" 2>/dev/null && echo "running (amqp://guest:guest@127.0.0.1:$((AMQP_BASE + i))/)" || echo stopped
  done
  ;;
failover)
  primary=$(primary_port); standby=$(other_port "$primary")
  kill -9 "$(head -1 "$DIR/$(data_of "$primary")/postmaster.pid")"  # the primary crashes
  as_pg "$PGBIN/pg_ctl" -D "$DIR/$(data_of "$standby")" -w promote
  sql "$standby" "ALTER SYSTEM RESET synchronous_standby_names" && sql "$standby" 'SELECT pg_reload_conf()' >/dev/null
  echo "promoted port $standby; the nodes reconnect to it on their own (their logs: $DIR/n*.log)"
  ;;
rebuild-standby)  # after a failover: the lost server comes back as the new primary's synchronous standby
  primary=$(primary_port); standby=$(other_port "$primary")
  as_pg "$PGBIN/pg_ctl" -D "$DIR/$(data_of "$standby")" -m immediate stop 2>/dev/null || true
  rm -rf "${DIR:?}/$(data_of "$standby")"
  clone_standby "$primary"
  ;;
standby-stop)
  standby=$(other_port "$(primary_port)")
  as_pg "$PGBIN/pg_ctl" -D "$DIR/$(data_of "$standby")" -m fast -w stop
  echo "standby stopped: every commit, so every publisher confirm, waits until: $0 standby-start"
  ;;
standby-start)
  standby=$(other_port "$(primary_port)")
  pg_start "$(data_of "$standby")" "$standby"
  ;;
down)
  for i in 1 2 3; do [ -f "$DIR/n$i.pid" ] && kill "$(cat "$DIR/n$i.pid")" 2>/dev/null || true; done
  for data in pg-a pg-b; do as_pg "$PGBIN/pg_ctl" -D "$DIR/$data" -m immediate stop 2>/dev/null || true; done
  rm -rf "$DIR"
  ;;
*)
  sed -n '2,16p' "$0"; exit 2
  ;;
esac
