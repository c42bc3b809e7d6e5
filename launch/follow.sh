#!/usr/bin/env bash
# Follows one worker's training log (worker 0, the one that prints the metrics, by default).
set -euo pipefail

USAGE="usage: launch/follow.sh [--worker N] [--gcs]

Prints the last lines of REMOTE_DIR/train.log on worker N of TPU_NAME (default 0, or
WORKER) and follows it (tail -F); Ctrl-C stops following, not training. With --gcs,
prints the worker's copy in gs://GCS_BUCKET/runs/RUN_NAME/logs/worker-N.log instead:
it lags by up to LOG_SYNC_SECONDS, holds every boot of the run, and outlives the slice.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
: "${WORKER:=0}"
from_gcs=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) [[ $# -ge 2 ]] || die "--worker needs a number"; WORKER=$2; shift 2 ;;
    --worker=*) WORKER=${1#--worker=}; shift ;;
    --gcs) from_gcs=1; shift ;;
    *) die "unexpected argument: $1 (see -h)" ;;
  esac
done
[[ "$WORKER" =~ ^[0-9]+$ ]] || die "the worker must be a number, not '$WORKER'"

if [[ "$from_gcs" == 1 ]]; then
  need_bucket
  run gcloud storage cat "$RUN_GCS/logs/worker-$WORKER.log"
else
  on_workers "$WORKER" "tail -n 200 -F $(shell_quote "$REMOTE_DIR")/train.log"
fi
