#!/bin/bash
# One-shot "init" service: creates the role the client signs its DynamoDB
# requests with, lets it create tables, and writes its Alternator key to the
# shared "credentials" volume as an ordinary AWS shared credentials file.
#
# With alternator_enforce_authorization, Alternator's access key ID is a CQL
# role name and the secret access key is that role's salted_hash (the hash
# of its password, in system.roles; system_auth.roles on older releases).
# Safe to re-run: every step is idempotent.
set -euo pipefail

: "${SCYLLA_HOST:?}" "${SUPERUSER:?}" "${SUPERUSER_PASSWORD:?}" "${ROLE:?}" "${ROLE_PASSWORD:?}"
out_dir=${CREDENTIALS_DIR:-/credentials}

cql() {
  cqlsh "$SCYLLA_HOST" 9042 -u "$SUPERUSER" -p "$SUPERUSER_PASSWORD" --no-color -e "$1"
}

# The nodes are healthy (compose waited for that), but the superuser from
# scylla-auth.yaml may still be on its way: retry the first login a while.
echo "init: logging in to $SCYLLA_HOST as $SUPERUSER"
for attempt in $(seq 1 60); do
  if cql "SELECT release_version FROM system.local" >/dev/null 2>&1; then
    break
  fi
  if [ "$attempt" = 60 ]; then
    cql "SELECT release_version FROM system.local"   # show the error
    exit 1
  fi
  sleep 2
done

echo "init: creating role $ROLE"
cql "CREATE ROLE IF NOT EXISTS $ROLE WITH PASSWORD = '$ROLE_PASSWORD' AND LOGIN = true"
# CreateTable needs CREATE on ALL KEYSPACES (each Alternator table is a CQL
# keyspace alternator_<name> with one table). The role that creates a table
# is then granted SELECT, MODIFY, ALTER and DROP on it automatically, so it
# needs nothing more for the workload; DeleteTable takes those back.
cql "GRANT CREATE ON ALL KEYSPACES TO $ROLE"

# The salted hash as cqlsh prints it: a header, a line of dashes, the value,
# then "(1 rows)" ("(0 rows)" and no value if the table has no such role).
key=""
for ks in system system_auth_v2 system_auth; do
  if out=$(cql "SELECT salted_hash FROM $ks.roles WHERE role = '$ROLE'" 2>/dev/null); then
    key=$(printf '%s\n' "$out" | awk '
      /^-+$/ { below = 1; next }
      below && NF && $0 !~ /^[ \t]*\(/ { gsub(/^[ \t]+|[ \t]+$/, ""); print; exit }')
    if [ -n "$key" ] && [ "$key" != "null" ]; then
      echo "init: read the key of $ROLE from $ks.roles"
      break
    fi
    key=""
  fi
done
if [ -z "$key" ]; then
  echo "init: no salted_hash for role $ROLE in system.roles, system_auth_v2.roles or system_auth.roles" >&2
  exit 1
fi

# Written to a temporary name and renamed, so a reader never sees half a file.
umask 022
mkdir -p "$out_dir"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$ROLE" "$key" \
  >"$out_dir/.credentials.tmp"
mv -f "$out_dir/.credentials.tmp" "$out_dir/credentials"
echo "init: wrote $out_dir/credentials (access key ID $ROLE; the secret is the role's salted_hash)"
