#!/usr/bin/env bash
# Install what gobi needs on Debian 12 (as root) and build the virtualenv in .venv.
#   scripts/bootstrap.sh          runtime: FUSE, build tools for pyfuse3, Python venv
#   scripts/bootstrap.sh --test   plus what the test suite and benchmarks use
# Idempotent: packages already installed are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-dev gcc pkg-config libfuse3-dev fuse3 ca-certificates)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(redis-server sqlite3 git rsync inotify-tools psmisc procps curl)
  # tests/fs read the mount's sync state as users do (getfattr/setfattr) and copy with xattrs
  packages+=(attr)
  # tests/deploy boot the host's systemd in a namespace sandbox and run systemd-analyze,
  # systemd-sysusers, systemd-tmpfiles, mount(8), unshare/nsenter/setpriv, useradd
  packages+=(systemd util-linux mount passwd)
  # tests/deploy/test_doctor.py runs deploy/proxy/Caddyfile (TLS in front of gobi)
  packages+=(caddy)
  # tests/web drive the web page in headless Chromium (Selenium + Debian's chromedriver)
  packages+=(chromium chromium-driver fonts-liberation)
  # bench/bench_mount.py compares against rclone mount and sshfs (its sshfs row also needs
  # openssh-server, left out here: its package starts an sshd on all interfaces)
  packages+=(rclone sshfs)
  # S3 driver tests run against a real Ceph RADOS Gateway (scripts/ceph/start_rgw.sh)
  packages+=(ceph-mon ceph-osd radosgw ceph-common)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # On a host run by systemd, Debian starts the caddy service (ports 80/443, every
  # interface): the tests start their own, on 127.0.0.1.
  if [[ " ${missing[*]} " == *" caddy "* && -d /run/systemd/system ]]; then
    systemctl disable --now caddy.service >/dev/null 2>&1 || true
  fi
fi

# Debian's own Python 3.11, not whatever python3 is first on PATH: this is what a fresh
# machine has, and pyfuse3 compiles against its headers.
PY=/usr/bin/python3
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
extra=""
[[ "${1:-}" == "--test" ]] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "^$" || true
.venv/bin/python -c "import gobi.server.app" >/dev/null

# The tests' MongoDB: no real mongod installs here, so the tests run against mongoeco, a
# MongoDB wire-protocol server that needs Python >= 3.13, in its own venv (.venv-mongo);
# tests/backing.py starts it. Without a 3.13, nx-27017 on this Python is the fallback.
if [[ "${1:-}" == "--test" && -z "${GOBI_TEST_MONGODB_URL:-}" ]]; then
  py313=""
  for c in "$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python3.13" \
           "$HOME/.pyenv/versions/3.13.0/bin/python3.13" "$(command -v python3.13 || true)"; do
    if [[ -n "$c" && -x "$c" ]]; then py313="$c"; break; fi
  done
  if [[ -n "$py313" ]]; then
    [[ -x .venv-mongo/bin/python ]] || "$py313" -m venv .venv-mongo
    .venv-mongo/bin/python -c "import mongoeco.wire" 2>/dev/null \
      || .venv-mongo/bin/python -m pip install -q --disable-pip-version-check "mongoeco[wire]==4.11.0" 2>&1 \
         | grep -v -e "^WARNING: Location" -e "^$" || true
    .venv-mongo/bin/python -c "import mongoeco.wire"
    echo "bootstrap: tests use mongoeco (MongoDB wire protocol) on $("$py313" --version)"
  else
    [[ -x .venv-mongo/bin/python ]] || "$PY" -m venv .venv-mongo
    [[ -x .venv-mongo/bin/nx-27017 ]] \
      || .venv-mongo/bin/python -m pip install -q --disable-pip-version-check "nx-27017==0.8.1" 2>&1 \
         | grep -v -e "^WARNING: Location" -e "^$" || true
    echo "bootstrap: no Python 3.13: tests use nx-27017 (MongoDB wire protocol over SQLite)"
  fi
fi
echo "bootstrap: ready (.venv/bin/gobi)"
