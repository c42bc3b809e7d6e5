#!/usr/bin/env bash
# Deletes the queued resource and its TPU VM slice (the run's data and checkpoints in GCS stay).
set -euo pipefail

USAGE="usage: launch/delete.sh

Deletes the queued resource TPU_NAME in ZONE together with its slice (--force: the
workers go too, running or not); gcloud asks for confirmation
(CLOUDSDK_CORE_DISABLE_PROMPTS=1 skips it). GCS_BUCKET is left as it is.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"

tpus queued-resources delete "$TPU_NAME" --force
