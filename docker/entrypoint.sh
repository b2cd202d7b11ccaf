#!/bin/sh
# Container entrypoint of the gobi image: secrets from files, then exec the command.
#
# For each variable below, NAME_FILE=/path (a Docker/compose secret) sets NAME to the
# file's content, so URLs with passwords and S3 keys never appear in `docker inspect`.
# Only these names are read this way: GOBI_KEY_FILE is a real setting, not an indirection.
set -eu

for name in GOBI_METADATA GOBI_FANOUT GOBI_STORAGE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
  file=$(printenv "${name}_FILE" || true)
  [ -n "$file" ] || continue
  if [ -n "$(printenv "$name" || true)" ]; then
    echo "gobi entrypoint: both $name and ${name}_FILE are set; use one" >&2
    exit 2
  fi
  if [ ! -r "$file" ]; then
    echo "gobi entrypoint: ${name}_FILE=$file is not readable" >&2
    exit 2
  fi
  # $(cat) drops trailing newlines, which editors like to add to secret files.
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done

exec "$@"
