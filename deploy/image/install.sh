#!/bin/sh
# Installs the meterwatch wheel of /tmp/wheels with the extras $1 (cpu,rocksdb or gpu,rocksdb)
# into the image's Python, creates the non-root user `meterwatch` (uid 10001) and the folders
# that docker-compose.yml mounts named volumes on. Docker fills an empty named volume with what
# the image holds at its mount point: so the model registry volume starts with the default
# bundle, copied from the installed package (the same lookup the worker makes).
set -eu
extras="$1"
pip install --no-cache-dir "$(ls /tmp/wheels/meterwatch-*.whl)[${extras}]"
rm -rf /tmp/wheels
useradd --system --uid 10001 --user-group --home-dir /var/lib/meterwatch --shell /usr/sbin/nologin \
  meterwatch
mkdir -p /var/lib/meterwatch/state /var/lib/meterwatch/models
cp -R "$(python -c 'from stream_app.models import default_bundle; print(default_bundle())')" \
  /var/lib/meterwatch/models/default
chown -R meterwatch:meterwatch /var/lib/meterwatch
# the worker's image holds no compiler and no test code: check that it starts at all
meterwatch --version
