#!/usr/bin/env bash
# Stops training on every worker: SIGTERM, then waits while the trainer saves its final checkpoint.
set -euo pipefail

USAGE="usage: launch/stop.sh

Sends SIGTERM to the training process on every worker of TPU_NAME, whose trainer
then writes a final checkpoint to WORKDIR and exits (the startup script then copies
its log to GCS), and waits up to STOP_TIMEOUT seconds for it to exit (exit status 1
on a worker where it did not). Stop launch/keepalive.sh first if it runs: it would
leave the stopped slice alone, but keep paying for it. launch/train.sh resumes.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"
need_seconds STOP_TIMEOUT

# The worker's shell runs this one line (dry runs print one line per command).
late="echo \"\$(hostname): pid \$pid still running after $STOP_TIMEOUT s\" >&2; exit 1"
stop="pid=\$(cat train.pid); sudo kill -TERM \"\$pid\";"
stop+=" echo \"\$(hostname): sent SIGTERM to \$pid\";"
stop+=" for _ in \$(seq $STOP_TIMEOUT); do training || break; sleep 1; done;"
stop+=" if training; then $late; fi"
remote="set -e; cd $(shell_quote "$REMOTE_DIR"); $TRAINING_FUNCTION; if training; then $stop; fi"
on_workers all "$remote; echo \"\$(hostname): stopped\""
