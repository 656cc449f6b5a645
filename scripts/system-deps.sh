#!/usr/bin/env bash
# System packages the tests need beyond PyPI, all from Debian:
#   chromium                          the report's browser test
#   slurmctld slurmd slurm-client munge   the SLURM test's single-node cluster (scripts/slurm-cluster.sh)
# Installs the missing ones when this user can (root with apt-get); otherwise says what is missing
# (those tests are then skipped, and fail instead when CI=true).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
command -v munged >/dev/null 2>&1 || missing+=(munge)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  for pkg in "${missing[@]}"; do
    # chromium with its recommends (fonts), as before; slurm without its ~100 MB of dev plugins
    [ "$pkg" = chromium ] && flags=() || flags=(--no-install-recommends)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${flags[@]}" "$pkg" >/dev/null
  done
else
  echo "system-deps: missing ${missing[*]} and cannot install here (needs root and apt-get);" \
       "the browser and SLURM tests will be skipped (they fail instead when CI=true)." >&2
fi
