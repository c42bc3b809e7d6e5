#!/usr/bin/env bash
# Runs the startup script again on every worker of a live slice: reinstalls if needed, resumes.
set -euo pipefail

USAGE="usage: launch/train.sh

On every worker of TPU_NAME, runs the slice's startup script again, detached, as at
boot: it reinstalls the project if launch/setup.sh uploaded a new source, and resumes
\`nullearn train\` from the latest checkpoint in WORKDIR, with the flags create.sh was
given (to change them, delete the slice and create it again: the run resumes).
Use it after launch/stop.sh. Refuses on a worker whose trainer still runs.
Settings come from launch/config.sh; DRY_RUN=1 prints the command instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"

# The worker's shell runs this one line (dry runs print one line per command).
dir=$(shell_quote "$REMOTE_DIR")
script=/tmp/nullearn-startup.sh
metadata=http://metadata.google.internal/computeMetadata/v1/instance/attributes/startup-script
busy="echo \"\$(hostname): still training; launch/stop.sh stops it\" >&2; exit 1"
fetch="curl -sSf -H 'Metadata-Flavor: Google' $metadata -o $script"
start="sudo nohup bash $script > /dev/null 2>&1 < /dev/null &"
remote="set -e; $TRAINING_FUNCTION; if [ -d $dir ] && cd $dir && training; then $busy; fi"
on_workers all "$remote; $fetch; $start echo \"\$(hostname): started\""
