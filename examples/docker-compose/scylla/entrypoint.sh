#!/bin/bash
# Entrypoint of the scylla1..3 services: adds scylla-auth.yaml (next to this
# script) to the image's scylla.yaml, then runs the image's own entrypoint
# with the service's command-line flags (--seeds, --smp, ...).
#
# Why not flags for everything: the first superuser's salted password
# contains "$", and the image passes its flags through a shell that would
# expand it. Why not a whole scylla.yaml of our own: appending keeps every
# other setting exactly as the pinned image ships it.
set -euo pipefail

# (The variables only let tests run this script outside the image.)
conf=${SCYLLA_YAML:-/etc/scylla/scylla.yaml}
extra=${EXTRA_YAML:-/etc/alternator-lb/scylla-auth.yaml}
image_entrypoint=${IMAGE_ENTRYPOINT:-/docker-entrypoint.py}
marker='# --- added by the alternator-lb docker-compose example ---'

# Once per container: a restarted container already has the settings.
if ! grep -qxF -- "$marker" "$conf"; then
  # Drop any line of the image's file that sets one of our keys, so each
  # key appears once.
  keys=$(sed -nE 's/^([a-z_]+):.*/\1/p' "$extra" | paste -sd '|' -)
  sed -i -E "/^(${keys}):/d" "$conf"
  { echo; echo "$marker"; cat "$extra"; } >>"$conf"
  echo "entrypoint.sh: added ${keys//|/, } to $conf"
fi

exec "$image_entrypoint" "$@"
