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

# The server runs in a session of its own: Ctrl-C reaches the terminal's whole foreground
# process group, and a server stopping at that same instant would leave the mount nothing
# to upload to. run.sh's trap stops things in order instead: upload and unmount, then the
# server.
setsid "$GOBI" server --data-dir "$DATA" --host 127.0.0.1 --port "$PORT" "$@" &
server_pid=$!
cleanup() {
  local status=$1
  trap - INT TERM EXIT
  echo
  if grep -q " $MNT fuse.gobi " /proc/self/mounts; then
    "$GOBI" umount "$MNT" --timeout 60 || status=$?
  fi
  if kill -TERM "$server_pid" 2>/dev/null; then
    wait "$server_pid" 2>/dev/null || status=$?
    echo "run.sh: server stopped"
  fi
  exit "$status"
}
# Ctrl-C and SIGTERM mean "stop cleanly" (exit 0 if it all went well); on any other exit
# the script's own status is kept.
trap 'cleanup 0' INT TERM
trap 'cleanup $?' EXIT

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
# Ctrl-C (or SIGTERM) interrupts this wait and runs cleanup, which exits 0 when everything
# was uploaded and stopped cleanly. A server that dies by itself ends the run with an error.
status=0
wait "$server_pid" || status=$?
echo "run.sh: the server exited by itself (status $status)" >&2
exit 1
