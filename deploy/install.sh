#!/bin/sh
# Install gobi's host integration on a systemd Linux host (as root); idempotent.
#
#   deploy/install.sh                server and client: user "gobi", directories, units,
#                                    /etc/gobi/server.toml (if missing), mount helper
#   deploy/install.sh --client-only  mounts only: gobi-mount@.service and the mount helper
#
# gobi itself must be installed first (docs/deployment.md): /usr/local/bin/gobi, usually a
# symlink to a virtualenv at /opt/gobi (created here when /opt/gobi/bin/gobi exists).
# Nothing is started or enabled: that is `systemctl enable --now gobi-server` etc.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
client_only=0
case "${1:-}" in
  --client-only) client_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--client-only]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

if [ ! -e /usr/local/bin/gobi ] && [ -x /opt/gobi/bin/gobi ]; then
  ln -s /opt/gobi/bin/gobi /usr/local/bin/gobi
fi
if [ ! -x /usr/local/bin/gobi ]; then
  echo "install.sh: /usr/local/bin/gobi not found: install gobi first (docs/deployment.md)" >&2
  exit 1
fi

say() { echo "install.sh: $*"; }

# The mount helper: mount(8) looks for /sbin/mount.<type>.
install -m 0755 "$here/mount.fuse.gobi" /sbin/mount.fuse.gobi
say "installed /sbin/mount.fuse.gobi (fstab type fuse.gobi)"
install -d -m 0755 /etc/systemd/system /usr/local/share/doc/gobi
install -m 0644 "$here/systemd/gobi-mount@.service" /etc/systemd/system/
install -m 0644 "$here/../docs/deployment.md" /usr/local/share/doc/gobi/deployment.md
install -d -m 0755 /etc/gobi/mounts
[ -e /etc/gobi/mounts/docs.conf.example ] || install -m 0644 "$here/mounts/docs.conf" /etc/gobi/mounts/docs.conf.example
say "installed gobi-mount@.service (configs: /etc/gobi/mounts/NAME.conf)"

if [ "$client_only" = 0 ]; then
  install -d -m 0755 /etc/sysusers.d /etc/tmpfiles.d
  install -m 0644 "$here/sysusers.d/gobi.conf" /etc/sysusers.d/gobi.conf
  install -m 0644 "$here/tmpfiles.d/gobi.conf" /etc/tmpfiles.d/gobi.conf
  systemd-sysusers /etc/sysusers.d/gobi.conf
  systemd-tmpfiles --create /etc/tmpfiles.d/gobi.conf
  if [ ! -e /etc/gobi/server.toml ]; then
    install -m 0640 -o root -g gobi "$here/server.toml" /etc/gobi/server.toml
    say "installed /etc/gobi/server.toml (edit it, then: systemctl enable --now gobi-server)"
  fi
  install -m 0644 "$here/systemd/gobi-server.service" /etc/systemd/system/
  say "installed gobi-server.service, user gobi, /var/lib/gobi"
fi

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
say "done; check this host with: gobi doctor$( [ "$client_only" = 0 ] && echo ' server --config /etc/gobi/server.toml')"
