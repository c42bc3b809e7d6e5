#!/usr/bin/env bash
# Requests the TPU slice as a queued resource whose workers install the project and train at boot.
set -euo pipefail

USAGE="usage: launch/create.sh [nullearn train flags...] [-- gcloud flags...]

Requests the queued resource TPU_NAME: a TPU VM slice (node TPU_NAME) of ACCELERATOR_TYPE
in ZONE with RUNTIME_VERSION, on CAPACITY: on-demand (default), spot or reserved. Its
startup script (launch/startup.sh behind this run's settings, written to STARTUP_FILE)
runs on every worker at every boot: it installs the project and starts, or resumes,
\`nullearn train --config=CONFIG --workdir=WORKDIR --multihost\` with the given flags:
  launch/create.sh --config.train.steps=100000 --config.data.batch_size=512
Flags after -- go to \`gcloud compute tpus queued-resources create\` (e.g. --network=NAME).
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
need_bucket
need_seconds LOG_SYNC_SECONDS
: "${STARTUP_FILE:=${TMPDIR:-/tmp}/nullearn-startup-$TPU_NAME.sh}"

case "$CAPACITY" in
  on-demand) capacity_flag="" ;;
  spot | reserved) capacity_flag="--$CAPACITY" ;;
  *) die "CAPACITY must be on-demand, spot or reserved, not '$CAPACITY'" ;;
esac
train_flags=()
while [[ $# -gt 0 && "$1" != -- ]]; do
  train_flags+=("$1")
  shift
done
[[ $# -eq 0 ]] || shift  # the --

# The settings as overridable defaults, then lib.sh and startup.sh.
{
  echo "#!/usr/bin/env bash"
  echo "# Startup script of nullearn run $RUN_NAME, written by launch/create.sh."
  echo "# shellcheck disable=SC2016  # the settings and flags are literal words"
  for name in RUN_GCS WORKDIR DATA_DIR LOCAL_DATA LOCAL_DATA_DIR CONFIG REPO_URL REPO_REF \
    PYTHON_VERSION REMOTE_DIR LOG_SYNC_SECONDS; do
    echo "[[ -n \"\${$name:-}\" ]] || $name=$(quote_word "${!name}")"
  done
  echo "TRAIN_FLAGS=($(shell_quote "${train_flags[@]}"))"
  cat "$(dirname "$0")/lib.sh" "$(dirname "$0")/startup.sh"
} > "$STARTUP_FILE"

tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
  --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" \
  ${capacity_flag:+"$capacity_flag"} --metadata-from-file=startup-script="$STARTUP_FILE" "$@"
