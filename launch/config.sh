# shellcheck shell=bash
# Settings and helpers shared by the launch scripts; sourced, never run.
#
# Every setting is overridable from the environment, e.g.
#   TPU_NAME=my-pod GCS_BUCKET=my-bucket launch/create.sh
# DRY_RUN=1 makes every script print its commands, one a line, instead of running them.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${TPU_NAME:=nullearn}"       # the queued resource and its TPU VM slice (node) share this name
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR_TYPE:=v4-128}"
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${PROJECT:=}"                # empty: gcloud's configured project
: "${CAPACITY:=on-demand}"      # on-demand, spot or reserved
: "${REPO_URL:=}"               # a git URL the workers clone; empty: setup.sh uploads REPO_DIR
: "${REPO_REF:=}"               # with REPO_URL: the commit, tag or branch (empty: the default)
: "${REPO_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${REMOTE_DIR:=/opt/nullearn}"  # on each worker: src/ (the code), venv/, train.log
: "${PYTHON_VERSION:=3.12}"     # the workers' venv; the image's own Python 3.10 is too old for JAX
: "${CONFIG:=configs/1b.py}"    # relative to the checkout
: "${RUN_NAME:=1b}"             # the same RUN_NAME resumes the same run
: "${GCS_BUCKET:=}"
RUN_GCS=${GCS_BUCKET:+gs://$GCS_BUCKET/runs/$RUN_NAME}  # source, logs, DONE and FAILED markers
if [[ -n "$GCS_BUCKET" ]]; then
  : "${DATA_DIR:=gs://$GCS_BUCKET/tensorflow_datasets}"
  : "${WORKDIR:=$RUN_GCS}"
fi
: "${DATA_DIR:=}"               # TFDS_DATA_DIR on the workers
: "${LOCAL_DATA:=0}"            # 1: each worker copies DATA_DIR to its own disk and reads it there
: "${LOCAL_DATA_DIR:=}"         # where LOCAL_DATA=1 copies it (empty: REMOTE_DIR/tensorflow_datasets)
: "${WORKDIR:=}"                # checkpoints, metrics and TensorBoard files
: "${STOP_TIMEOUT:=900}"        # seconds stop.sh waits for the final checkpoint
: "${LOG_SYNC_SECONDS:=60}"     # how often each worker copies its log to GCS
: "${POLL_SECONDS:=60}"         # how often keepalive.sh asks for the slice's state
: "${MAX_RESTARTS:=20}"         # how many times keepalive.sh recreates the slice at most
: "${DRY_RUN:=0}"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Prints USAGE and exits when the first argument asks for help.
usage_on_help() {
  case "${1:-}" in
    -h | --help) echo "$USAGE"; exit 0 ;;
  esac
}

no_arguments() {
  [[ $# -eq 0 ]] || die "unexpected arguments: $* (see -h)"
}

need_bucket() {
  [[ -n "$GCS_BUCKET" ]] || die "set GCS_BUCKET: the run's source, logs and markers live there"
}

# Refuses a setting that is not a whole number of seconds (or, with "fraction", a decimal one).
need_seconds() {
  local pattern='^[0-9]+$'
  [[ "${2:-}" != fraction ]] || pattern='^[0-9]+([.][0-9]+)?$'
  [[ "${!1}" =~ $pattern ]] || die "$1 must be a number of seconds, not '${!1}'"
}

# Runs a command, echoing it to stderr; with DRY_RUN=1 only prints it, to stdout.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    shell_quote "$@"
    return
  fi
  echo "+ $(shell_quote "$@")" >&2
  "$@"
}

# `gcloud compute tpus GROUP ARGS...` (GROUP: tpu-vm or queued-resources), in ZONE and PROJECT.
tpus() {
  local group=$1
  shift
  run gcloud compute tpus "$group" "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

# Runs one shell command line on a worker of the slice: "all" or an index.
on_workers() {
  tpus tpu-vm ssh "$TPU_NAME" --worker="$1" --command="$2"
}

[[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN must be 0 or 1, not '$DRY_RUN'"
[[ "$LOCAL_DATA" == 0 || "$LOCAL_DATA" == 1 ]] \
  || die "LOCAL_DATA must be 0 or 1, not '$LOCAL_DATA'"
