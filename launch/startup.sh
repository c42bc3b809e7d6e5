# shellcheck shell=bash
# The workers' startup script. launch/create.sh puts the run's settings and launch/lib.sh in
# front of this file and passes the whole as the slice's `startup-script` metadata, which every
# worker runs as root at every boot: so a slice recreated after a preemption trains again, from
# the latest checkpoint in WORKDIR, without anyone logging in.
#
# On each worker, in REMOTE_DIR: installs the project (src/, venv/; once per source), runs
# `nullearn train --multihost` logging to train.log, copies that log to
# RUN_GCS/logs/worker-N.log every LOG_SYNC_SECONDS and at exit, and leaves a marker in RUN_GCS:
# DONE (worker 0, once the final checkpoint exists) or FAILED (a trainer exited with an error
# without being told to stop). SIGTERM (a preemption, launch/stop.sh) reaches the trainer, which
# writes a checkpoint and exits.
#
# With LOCAL_DATA=1 each worker first stages the prepared dataset: `gcloud storage rsync` of
# DATA_DIR to LOCAL_DATA_DIR on its own disk (only what is missing or changed, so a reboot on
# the same disk copies nothing), and the trainer reads it there (TFDS_DATA_DIR) instead of
# from GCS: random reads of a local disk take microseconds, of GCS tens of milliseconds.
#
# Settings from the header create.sh writes: RUN_GCS WORKDIR DATA_DIR LOCAL_DATA LOCAL_DATA_DIR
# CONFIG REPO_URL REPO_REF PYTHON_VERSION REMOTE_DIR LOG_SYNC_SECONDS TRAIN_FLAGS; a setting
# already in the environment wins. Where there is no TPU metadata server (another cluster, the tests): NULLEARN_WORKER is
# this worker's index, and NULLEARN_COORDINATOR (host:port of worker 0) with NULLEARN_NUM_WORKERS
# tell JAX what it would otherwise discover.
# shellcheck disable=SC2154  # the settings come from the header

set -uo pipefail  # no -e: whatever fails, the log must still reach GCS
export HOME=${HOME:-/root}  # pip and uv need one; systemd gives the startup script none
export PATH=$PATH:/snap/bin  # gcloud, where the image has it as a snap
METADATA=http://metadata.google.internal/computeMetadata/v1/instance/attributes

mkdir -p "$REMOTE_DIR" && cd "$REMOTE_DIR" || exit 1
LOCAL_DATA_DIR=${LOCAL_DATA_DIR:-$REMOTE_DIR/tensorflow_datasets}
eval "$TRAINING_FUNCTION"
if training; then
  echo "$(utc_now) startup: the trainer already runs (pid $(cat train.pid))" >&2
  exit 0
fi
worker=${NULLEARN_WORKER:-$(curl -sf -H 'Metadata-Flavor: Google' "$METADATA/agent-worker-number")}
[[ "$worker" =~ ^[0-9]+$ ]] || { echo "startup: no worker index (NULLEARN_WORKER)" >&2; exit 1; }
log_url=$RUN_GCS/logs/worker-$worker.log

say() {
  printf '%s startup: %s\n' "$(utc_now)" "$*" | tee -a train.log
}

copy_log() {
  gcloud storage cp train.log "$log_url" > /dev/null 2>&1 \
    || say "could not copy the log to $log_url"
}

# Writes a marker object, e.g. `mark DONE "..."`.
mark() {
  printf '%s\n' "$2" | gcloud storage cp - "$RUN_GCS/$1" > /dev/null 2>&1 \
    || say "could not write $RUN_GCS/$1"
}

# The project in src/ and venv/; pip runs only when the source differs from the installed one.
install() {
  local source_id
  if [[ -n "$REPO_URL" ]]; then
    if [[ ! -d src/.git ]]; then
      rm -rf src && git clone --quiet "$REPO_URL" src || return
    fi
    git -C src fetch --quiet origin \
      && git -C src checkout --quiet --detach "${REPO_REF:-origin/HEAD}" || return
    source_id=$(git -C src rev-parse HEAD) || return
  else
    gcloud storage cp "$RUN_GCS/source.tar.gz" source.tar.gz || return
    rm -rf src && mkdir src && tar -xzf source.tar.gz -C src || return
    source_id=$(sha256sum source.tar.gz) && source_id=${source_id%% *} || return
  fi
  if [[ -x venv/bin/nullearn && "$(cat installed 2> /dev/null)" == "$source_id" ]]; then
    echo "source $source_id is installed"
    return
  fi
  if [[ ! -x venv/bin/python ]]; then
    python3 -m pip install --quiet --user uv \
      && python3 -m uv venv --seed --python "$PYTHON_VERSION" venv || return
  fi
  (cd src && ../venv/bin/pip install --quiet -e ".[tpu]") && echo "$source_id" > installed
}

# The prepared dataset (DATA_DIR) copied to LOCAL_DATA_DIR on this worker's disk.
stage_data() {
  [[ -n "$DATA_DIR" ]] || { echo "LOCAL_DATA=1 needs DATA_DIR, the dataset to copy"; return 1; }
  mkdir -p "$LOCAL_DATA_DIR" || return
  echo "staging $DATA_DIR in $LOCAL_DATA_DIR"
  gcloud storage rsync --recursive "$DATA_DIR" "$LOCAL_DATA_DIR" || return
  echo "staged $(du -sh "$LOCAL_DATA_DIR" | cut -f1) in $LOCAL_DATA_DIR"
}

# The run's final checkpoint (step train.steps of WORKDIR/config.json) exists.
finished() {
  local steps
  steps=$(storage_cat "$WORKDIR/config.json" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["train"]["steps"])') || return
  [[ "$steps" -gt 0 ]] && storage_exists "$WORKDIR/checkpoints/$steps"
}

# The exit status of child PID, waiting on through signals trapped meanwhile.
wait_for() {
  local status
  while true; do
    wait "$1"
    status=$?
    kill -0 "$1" 2> /dev/null || return "$status"
  done
}

# A new disk continues the log this worker's predecessors left in GCS.
[[ -s train.log ]] || gcloud storage cp "$log_url" train.log > /dev/null 2>&1 || true
say "worker $worker of run ${RUN_GCS##*/} on $(hostname)"
stopping=0
trap 'stopping=1' TERM
(while sleep "$LOG_SYNC_SECONDS"; do copy_log; done) &
syncer=$!

status=0
data_dir=$DATA_DIR  # what the trainer reads as TFDS_DATA_DIR
if ! install >> train.log 2>&1; then
  status=1
  say "installing the project failed"
elif [[ "$LOCAL_DATA" == 1 ]] && ! stage_data >> train.log 2>&1; then
  status=1
  say "staging the data in $LOCAL_DATA_DIR failed"
else
  [[ "$LOCAL_DATA" != 1 ]] || data_dir=$LOCAL_DATA_DIR
  trainer=("$PWD/venv/bin/nullearn" train --config="$CONFIG" --workdir="$WORKDIR" --multihost)
  if [[ -n "${NULLEARN_COORDINATOR:-}" ]]; then
    trainer+=(--coordinator_address="$NULLEARN_COORDINATOR" --num_processes="$NULLEARN_NUM_WORKERS"
              --process_id="$worker")
  fi
  trainer+=("${TRAIN_FLAGS[@]}")
  say "starting: $(shell_quote "${trainer[@]}")"
  # Unbuffered: each line reaches train.log, and so GCS, when it is printed.
  (cd src && exec env PYTHONUNBUFFERED=1 ${data_dir:+"TFDS_DATA_DIR=$data_dir"} "${trainer[@]}") \
    >> train.log 2>&1 < /dev/null &
  echo $! > train.pid
  wait_for "$!"
  status=$?
  rm -f train.pid
fi

trap '' TERM  # the trainer is gone: let the last copy finish (children inherit the ignore)
kill "$syncer" 2> /dev/null
if [[ "$status" == 0 ]] && finished; then
  say "the run is finished"
  copy_log
  [[ "$worker" != 0 ]] || mark DONE "$(utc_now) finished; logs in $RUN_GCS/logs"
elif [[ "$status" != 0 && "$stopping" == 0 ]]; then
  say "failed with exit status $status"
  copy_log
  mark FAILED "$(utc_now) worker $worker: exit status $status; log: $log_url"
else
  say "stopped (exit status $status); the next boot resumes"
  copy_log
fi
