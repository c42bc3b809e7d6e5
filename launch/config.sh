# shellcheck shell=bash
# Settings and helpers shared by the launch scripts; sourced, never run.
#
# Every setting is overridable from the environment, e.g.
#   TPU_NAME=my-pod GCS_BUCKET=my-bucket launch/train.sh
# DRY_RUN=1 makes every script print its commands, one a line, instead of running them.

: "${TPU_NAME:=nullearn}"
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR_TYPE:=v4-128}"
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${PROJECT:=}"                # empty: gcloud's configured project
: "${CAPACITY:=on-demand}"      # on-demand, spot, preemptible or reserved
: "${REPO_URL:=}"               # a git URL the workers clone; empty: copy REPO_DIR to them
: "${REPO_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${REMOTE_DIR:=nullearn}"     # the checkout on each worker, relative to its home
: "${PYTHON_VERSION:=3.12}"     # the workers' venv; the image's own Python 3.10 is too old for JAX
: "${CONFIG:=configs/1b.py}"    # relative to REMOTE_DIR
: "${RUN_NAME:=1b}"             # the same RUN_NAME resumes the same run
: "${GCS_BUCKET:=}"
if [[ -n "$GCS_BUCKET" ]]; then
  : "${DATA_DIR:=gs://$GCS_BUCKET/tensorflow_datasets}"
  : "${WORKDIR:=gs://$GCS_BUCKET/runs/$RUN_NAME}"
fi
: "${DATA_DIR:=}"               # TFDS_DATA_DIR on the workers
: "${WORKDIR:=}"                # checkpoints, metrics and TensorBoard files
: "${STOP_TIMEOUT:=900}"        # seconds stop.sh waits for the final checkpoint
: "${DRY_RUN:=0}"

# Defines `training` for a worker's shell, inside REMOTE_DIR: true while its trainer runs
# (a pid file left by a dead one is not enough). train.sh and stop.sh use it.
# shellcheck disable=SC2016,SC2034
DEFINE_TRAINING='training() { [ -e train.pid ] && grep -qs nullearn "/proc/$(cat train.pid)/cmdline"; }'

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

# One line that a shell reads back as exactly these words, so dry runs can be pasted.
shell_quote() {
  local word line=""
  for word in "$@"; do
    line+="${line:+ }$(quote_word "$word")"
  done
  printf '%s\n' "$line"
}

# A word as the shell's input: bare when safe, else single-quoted (after a --flag= prefix).
quote_word() {
  local safe='^[[:alnum:]_./:=@%+,-]+$' flag='^(--[[:alnum:]-]+=)(.*)$' escaped="'\\''"
  if [[ "$1" =~ $safe ]]; then
    printf '%s\n' "$1"
  elif [[ "$1" =~ $flag ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}$(quote_word "${BASH_REMATCH[2]}")"
  else
    printf '%s\n' "'${1//\'/$escaped}'"
  fi
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

# `gcloud compute tpus tpu-vm ARGS...` in the slice's zone and project.
tpu_vm() {
  run gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

# Runs one shell command line on a worker of the slice: "all" or an index.
on_workers() {
  tpu_vm ssh "$TPU_NAME" --worker="$1" --command="$2"
}

[[ "$DRY_RUN" == 0 || "$DRY_RUN" == 1 ]] || die "DRY_RUN must be 0 or 1, not '$DRY_RUN'"
