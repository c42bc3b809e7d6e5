#!/usr/bin/env bash
# Keeps a run going until it is done: recreates the slice whenever it was preempted.
set -euo pipefail

USAGE="usage: launch/keepalive.sh [launch/create.sh arguments...]

Watches the queued resource TPU_NAME every POLL_SECONDS, from any machine with gcloud
(a laptop, a small VM; e.g. under nohup or tmux), and keeps the run RUN_NAME going:
  - no queued resource: creates it (launch/create.sh with these arguments);
  - SUSPENDED (preempted) or FAILED: deletes it and creates it again (at most
    MAX_RESTARTS times); the new workers' startup script resumes from the latest checkpoint;
  - gs://GCS_BUCKET/runs/RUN_NAME/DONE (worker 0 leaves it after the final step):
    deletes the slice and exits 0;
  - FAILED marker there (a trainer exited with an error) on an ACTIVE slice, seen on two
    polls in a row: deletes the slice and exits 1. It refuses to start while that marker
    is there: read the logs, fix, remove it (gcloud storage rm), start again.
Waiting for resources or provisioning, it waits. Its own lines start with the time.
Settings come from launch/config.sh; DRY_RUN=1 prints what it runs on a preempted slice."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
need_bucket
need_seconds POLL_SECONDS fraction
[[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || die "MAX_RESTARTS must be a number, not '$MAX_RESTARTS'"
launch=$(dirname "$0")

say() {
  echo "$(utc_now) keepalive: $*" >&2
}

# The queued resource's state (ACTIVE, SUSPENDED, ...): NONE when there is none, UNKNOWN when
# gcloud could not say.
queued_state() {
  local errors state
  errors=$(mktemp)
  if state=$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$ZONE" \
      ${PROJECT:+"--project=$PROJECT"} --format='value(state.state)' 2> "$errors"); then
    echo "${state:-UNKNOWN}"
  elif grep -q NOT_FOUND "$errors"; then
    echo NONE
  else
    say "describe failed: $(tr '\n' ' ' < "$errors")"
    echo UNKNOWN
  fi
  rm -f "$errors"
}

delete_slice() {
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 "$launch/delete.sh"
}

if [[ "$DRY_RUN" == 1 ]]; then
  delete_slice
  "$launch/create.sh" "$@"
  exit 0
fi
if storage_exists "$RUN_GCS/FAILED"; then
  die "$RUN_GCS/FAILED: $(storage_cat "$RUN_GCS/FAILED") (remove it to try again)"
fi

say "watching $TPU_NAME for run $RUN_NAME every $POLL_SECONDS s"
creations=0 failed_polls=0 last=""

create_slice() {
  if [[ "$creations" -gt "$MAX_RESTARTS" ]]; then
    say "giving up after $creations creations (MAX_RESTARTS=$MAX_RESTARTS)"
    exit 1
  fi
  creations=$((creations + 1))
  "$launch/create.sh" "$@" || say "create failed; trying again in $POLL_SECONDS s"
}

while true; do
  state=$(queued_state)
  [[ "$state" == "$last" ]] || say "$TPU_NAME: $state"
  last=$state
  if storage_exists "$RUN_GCS/DONE"; then
    say "run $RUN_NAME is done: $(storage_cat "$RUN_GCS/DONE")"
    [[ "$state" == NONE ]] || delete_slice
    exit 0
  fi
  if [[ "$state" == ACTIVE ]] && storage_exists "$RUN_GCS/FAILED"; then
    failed_polls=$((failed_polls + 1))
    if [[ "$failed_polls" -ge 2 ]]; then
      say "training failed: $(storage_cat "$RUN_GCS/FAILED")"
      delete_slice
      exit 1
    fi
  else
    failed_polls=0
  fi
  case "$state" in
    NONE) create_slice "$@" ;;
    SUSPENDED | FAILED) delete_slice && create_slice "$@" ;;
  esac
  sleep "$POLL_SECONDS"
done
