#!/usr/bin/env bash
# The main job, on embedded defaults: install, start the gobi server (SQLite metadata,
# local encrypted storage, in-process fan-out; data under ./gobi-data), create a demo
# user and vault, and mount the vault at ./gobi-vault. Ctrl-C (or SIGTERM) uploads what
# is pending, unmounts and stops the server.
#
#   GOBI_DATA_DIR   server data            (default ./gobi-data)
#   GOBI_MOUNT      where the vault shows  (default ./gobi-vault)
#   GOBI_PORT       server port            (default 8080)
# Extra arguments go to `gobi server`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

DATA="${GOBI_DATA_DIR:-$PWD/gobi-data}"
MNT="${GOBI_MOUNT:-$PWD/gobi-vault}"
PORT="${GOBI_PORT:-8080}"
URL="http://127.0.0.1:$PORT"
GOBI=.venv/bin/gobi
mkdir -p "$DATA" "$MNT"

# A mount left behind by a killed run would make the mountpoint unusable.
if grep -q " $MNT fuse.gobi " /proc/self/mounts; then
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
fi

"$GOBI" server --data-dir "$DATA" --host 127.0.0.1 --port "$PORT" "$@" &
server_pid=$!
cleanup() {
  trap - INT TERM EXIT
  echo
  if grep -q " $MNT fuse.gobi " /proc/self/mounts; then
    "$GOBI" umount "$MNT" --timeout 60 || true
  fi
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

for _ in $(seq 1 100); do
  curl -fs "$URL/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "run.sh: the server did not start" >&2; exit 1; }
  sleep 0.2
done

# The demo user's password is generated once and kept next to the data (mode 0600).
if [[ ! -s "$DATA/demo-password" ]]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DATA/demo-password")
fi
"$GOBI" login "$URL" --user demo --register --password-stdin < "$DATA/demo-password"
"$GOBI" vault create demo --exist-ok >/dev/null
"$GOBI" mount demo "$MNT" --server "$URL"

cat <<EOF

  Your vault "demo" is mounted at $MNT
  Use it like any folder:   cp -a ~/Documents $MNT/   ls -l $MNT
  Upload state:             $GOBI status $MNT
  Server:                   $URL (user demo, password in $DATA/demo-password)

  Press Ctrl-C to upload what is pending, unmount and stop the server.
EOF
wait "$server_pid"
