#!/usr/bin/env bash
# A local single-member etcd for trying discovery by hand (tests start their own on free ports).
# Usage: scripts/etcd.sh start|stop|status|ls   (env ETCD_PORT, default 2379; data in var/etcd)
# Installs etcd-server/etcd-client with apt on a fresh Debian machine (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${ETCD_PORT:-2379}
PEER_PORT=$((PORT + 1))
DIR=var/etcd
PIDFILE=$DIR/etcd.pid
ENDPOINT=127.0.0.1:$PORT

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if ! command -v etcd >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
  fi
  if running; then echo "etcd already running at $ENDPOINT (pid $(cat "$PIDFILE"))"; return; fi
  mkdir -p "$DIR"
  etcd --name fedsite --data-dir "$DIR/data" \
    --listen-client-urls "http://$ENDPOINT" --advertise-client-urls "http://$ENDPOINT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "fedsite=http://127.0.0.1:$PEER_PORT" --initial-cluster-state new \
    --logger zap --log-outputs stderr >"$DIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINT" endpoint health >/dev/null 2>&1; then
      echo "etcd running at $ENDPOINT (pid $(cat "$PIDFILE"), log $DIR/etcd.log); export ETCD_ENDPOINTS=$ENDPOINT"
      return
    fi
    sleep 0.1
  done
  echo "etcd did not become healthy; see $DIR/etcd.log" >&2
  exit 1
}

stop() {
  if running; then kill "$(cat "$PIDFILE")"; echo "etcd stopped"; else echo "etcd is not running"; fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running at $ENDPOINT (pid $(cat "$PIDFILE"))"; else echo "not running"; exit 1; fi ;;
  ls) ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINT" get --prefix /fedlearn/ ;;
  *) echo "usage: $0 start|stop|status|ls" >&2; exit 2 ;;
esac
