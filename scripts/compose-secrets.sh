#!/usr/bin/env bash
# Generate the secret files docker-compose.yml reads, under ./secrets (or $1).
# Existing files are kept, so running it again never changes a deployed password.
# The directory is 0700 (nobody else on the host can reach the files); the files are 0644
# because compose bind-mounts them with their host mode and the containers read them as
# their own non-root users (gobi, mongodb, redis).
#   bash scripts/compose-secrets.sh [DIR]
# Passwords are hex, so they need no escaping inside URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-secrets}"
umask 077
mkdir -p "$dir"

rand() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
put() {  # put NAME VALUE: write once
  if [[ -s "$dir/$1" ]]; then echo "keep   $dir/$1"; return; fi
  printf '%s\n' "$2" > "$dir/$1"
  echo "create $dir/$1"
}

put mongo_root_password "$(rand)"
put gobi_metadata_url \
  "mongodb://gobi:$(rand)@mongo1:27017,mongo2:27017,mongo3:27017/gobi?replicaSet=rs0&authSource=gobi&w=majority"
# The Redis password appears twice (server and URL), so both are derived together.
if [[ ! -s "$dir/redis_password" || ! -s "$dir/gobi_fanout_url" ]]; then
  rm -f "$dir/redis_password" "$dir/gobi_fanout_url"
  redis_password="$(rand)"
  put redis_password "$redis_password"
  put gobi_fanout_url "redis://:$redis_password@redis:6379/0"
else
  echo "keep   $dir/redis_password, $dir/gobi_fanout_url"
fi
put s3_access_key "gobi-$(rand | cut -c1-12)"
put s3_secret_key "$(rand)"
chmod 700 "$dir"
chmod 644 "$dir"/*
