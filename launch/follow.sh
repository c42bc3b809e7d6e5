#!/usr/bin/env bash
# Follows one worker's training log (worker 0, the one that prints the metrics, by default).
set -euo pipefail

USAGE="usage: launch/follow.sh [--worker N]

Prints the last lines of ~/REMOTE_DIR/train.log on worker N of TPU_NAME (default 0,
or WORKER) and follows it (tail -F); Ctrl-C stops following, not training.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
: "${WORKER:=0}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) [[ $# -ge 2 ]] || die "--worker needs a number"; WORKER=$2; shift 2 ;;
    --worker=*) WORKER=${1#--worker=}; shift ;;
    *) die "unexpected argument: $1 (see -h)" ;;
  esac
done
[[ "$WORKER" =~ ^[0-9]+$ ]] || die "the worker must be a number, not '$WORKER'"

on_workers "$WORKER" "tail -n 200 -F $(shell_quote "$REMOTE_DIR")/train.log"
