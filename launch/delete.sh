#!/usr/bin/env bash
# Deletes the TPU VM pod slice (the run's data and checkpoints in GCS stay).
set -euo pipefail

USAGE="usage: launch/delete.sh

Deletes the TPU VM slice TPU_NAME in ZONE; gcloud asks for confirmation
(CLOUDSDK_CORE_DISABLE_PROMPTS=1 skips it). GCS_BUCKET is left as it is.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"

tpu_vm delete "$TPU_NAME"
