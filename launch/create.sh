#!/usr/bin/env bash
# Creates the TPU VM pod slice.
set -euo pipefail

USAGE="usage: launch/create.sh [gcloud create flags...]

Creates the TPU VM slice TPU_NAME of ACCELERATOR_TYPE in ZONE with RUNTIME_VERSION.
CAPACITY=spot|preemptible|reserved asks for that capacity (default: on-demand).
Extra flags go to \`gcloud compute tpus tpu-vm create\` (e.g. --network=NAME).
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"

case "$CAPACITY" in
  on-demand) capacity_flag="" ;;
  spot | preemptible | reserved) capacity_flag="--$CAPACITY" ;;
  *) die "CAPACITY must be on-demand, spot, preemptible or reserved, not '$CAPACITY'" ;;
esac

tpu_vm create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
  ${capacity_flag:+"$capacity_flag"} "$@"
