#!/usr/bin/env bash
# Single-node throwaway Ceph (1 mon, 1 memstore OSD, no mgr) + RGW (S3) on 127.0.0.1, no systemd, no cephx.
# The S3 driver's contract tests run against it (tests/drivers/ceph.py starts and stops it).
# Needs: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common
#        (scripts/bootstrap.sh --test installs them)
# usage: start_rgw.sh DIR RGW_PORT   (MON_PORT in the environment picks the monitor port;
#        PIDs go into DIR/pids; stop with stop_rgw.sh DIR)
# Credentials: access key "test", secret "testtest". Everything lives in RAM and in DIR.
set -euo pipefail
DIR=$(realpath -m "${1:-/tmp/ceph-rgw}")
PORT=${2:-9105}
MON_PORT=${MON_PORT:-16789}
for port in "$MON_PORT" "$PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port already in use; stop the old cluster first" >&2; exit 1; fi
done
rm -rf "$DIR"; mkdir -p "$DIR"/{mon,osd,run,log,rgw}
cleanup_on_error() {
  echo "startup failed at line ${1:-?}; stopping what was started (logs in $DIR/log)" >&2
  for f in "$DIR"/run/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
  for f in "$DIR"/log/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  return 0
}
trap 'cleanup_on_error $LINENO' ERR
FSID=$(cat /proc/sys/kernel/random/uuid)
CONF="$DIR/ceph.conf"
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
ms bind ipv6 = false
ms bind msgr2 = false
[mon]
mon data = $DIR/mon/\$cluster-\$id
[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd journal size = 64
osd class update on start = false
osd crush update on start = false
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $DIR/rgw
rgw dns name = localhost
rgw enable usage log = false
rgw lc debug interval = 10
EOF
export CEPH_CONF="$CONF"
T0=$(date +%s%N)
ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" -c "$CONF"
ceph-mon -i a -c "$CONF"
for i in $(seq 1 100); do ceph -c "$CONF" --connect-timeout 2 mon stat >/dev/null 2>&1 && break; sleep 0.2; done
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph -c "$CONF" osd create "$OSD_UUID")
mkdir -p "$DIR/osd/ceph-$OSD_ID"
ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" -c "$CONF" >/dev/null 2>&1
ceph -c "$CONF" osd crush add "osd.$OSD_ID" 1 root=default host=localhost >/dev/null 2>&1
ceph-osd -i "$OSD_ID" -c "$CONF"
for i in $(seq 1 150); do ceph -c "$CONF" osd stat 2>/dev/null | grep -q "1 up" && break; sleep 0.2; done
radosgw -n client.rgw.a -c "$CONF"
for i in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
radosgw-admin -c "$CONF" user create --uid=test --display-name=test --access-key=test --secret-key=testtest >/dev/null
echo "ready after $(( ($(date +%s%N) - T0) / 1000000 )) ms: http://127.0.0.1:$PORT (access=test secret=testtest), conf=$CONF"
trap - ERR
cat "$DIR"/run/*.pid | tr '\n' ' ' > "$DIR/pids"; echo "pids: $(cat "$DIR/pids")"
