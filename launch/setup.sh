#!/usr/bin/env bash
# Uploads the project's source for the workers' startup script; rerun it after changing the code.
set -euo pipefail

USAGE="usage: launch/setup.sh

Packs REPO_DIR (without .git, venvs, caches and outputs) and uploads it to
gs://GCS_BUCKET/runs/RUN_NAME/source.tar.gz, where every worker's startup script
fetches it at boot (and reinstalls when it changed). With REPO_URL set the workers
clone that instead, and there is nothing to upload.
Settings come from launch/config.sh; DRY_RUN=1 prints the commands instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"
need_bucket

if [[ -n "$REPO_URL" ]]; then
  echo "REPO_URL is set: the workers clone $REPO_URL${REPO_REF:+ at $REPO_REF};" \
    "nothing to upload" >&2
  exit 0
fi
tarball="${TMPDIR:-/tmp}/nullearn-src.tar.gz"
run tar -czf "$tarball" -C "$REPO_DIR" --exclude=.git --exclude=.venv --exclude=.ci/venv \
  --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache --exclude=build \
  --exclude=dist --exclude=runs --exclude=demo_out .
run gcloud storage cp "$tarball" "$RUN_GCS/source.tar.gz"
