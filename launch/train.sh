#!/usr/bin/env bash
# Starts (or resumes) training on every worker of the slice, in the background.
set -euo pipefail

USAGE="usage: launch/train.sh [nullearn train flags...]

Starts \`nullearn train --config=CONFIG --workdir=WORKDIR --multihost\` with
TFDS_DATA_DIR=DATA_DIR on every worker of TPU_NAME at once, detached (nohup), logging
to ~/REMOTE_DIR/train.log on each worker. Extra flags are passed through, e.g.
  launch/train.sh --config.train.steps=100000 --config.data.batch_size=512
The trainer resumes from the latest checkpoint in WORKDIR: rerun this to resume.
Refuses to start on a worker that is still training (launch/stop.sh stops it).
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
[[ -n "$WORKDIR" && -n "$DATA_DIR" ]] || die "set GCS_BUCKET (or both WORKDIR and DATA_DIR)"

# The worker's shell runs this one line (dry runs print one line per command).
trainer=$(shell_quote .venv/bin/nullearn train --config="$CONFIG" --workdir="$WORKDIR" --multihost "$@")
busy="echo \"\$(hostname): still training; launch/stop.sh stops it\" >&2; exit 1"
start="TFDS_DATA_DIR=$(shell_quote "$DATA_DIR") nohup $trainer >> train.log 2>&1 < /dev/null &"
remote="set -e; cd $(shell_quote "$REMOTE_DIR"); $DEFINE_TRAINING; if training; then $busy; fi"
on_workers all "$remote; $start echo \$! > train.pid"
