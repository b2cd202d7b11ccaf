#!/usr/bin/env bash
# usage: stop_rgw.sh DIR  — stops the daemons started by start_rgw.sh (by PID) and removes DIR
DIR=$(realpath -m "${1:-/tmp/ceph-rgw}")
[ -f "$DIR/pids" ] || exit 0
PIDS=$(cat "$DIR/pids")
kill $PIDS 2>/dev/null
for i in $(seq 1 50); do alive=0; for p in $PIDS; do kill -0 $p 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 0.2; done
for p in $PIDS; do kill -0 $p 2>/dev/null && kill -9 $p; done
rm -rf "$DIR"
