#!/usr/bin/env bash
# Installs the project on every worker of the slice; rerun it after changing the code.
set -euo pipefail

USAGE="usage: launch/setup.sh

On every worker of TPU_NAME: puts the project in ~/REMOTE_DIR (a clone of REPO_URL,
or, when REPO_URL is empty, a copy of REPO_DIR), creates its venv with Python
PYTHON_VERSION (fetched by uv) and runs pip install -e '.[tpu]'.
Settings come from launch/config.sh; DRY_RUN=1 prints the commands instead."

# shellcheck source-path=SCRIPTDIR source=config.sh
source "$(dirname "$0")/config.sh"
usage_on_help "$@"
no_arguments "$@"

dir=$(shell_quote "$REMOTE_DIR")
tarball=nullearn-src.tar.gz
if [[ -n "$REPO_URL" ]]; then
  fetch="if [ -d $dir/.git ]; then git -C $dir pull --ff-only;"
  fetch+=" else git clone $(shell_quote "$REPO_URL") $dir; fi"
else  # ship REPO_DIR without its venv, git history or outputs
  local_tarball="${TMPDIR:-/tmp}/$tarball"
  run tar -czf "$local_tarball" -C "$REPO_DIR" --exclude=.git --exclude=.venv --exclude=.ci/venv \
    --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache --exclude=build \
    --exclude=dist --exclude=runs --exclude=demo_out .
  tpu_vm scp "$local_tarball" "$TPU_NAME:$tarball" --worker=all
  fetch="mkdir -p $dir; tar -xzf $tarball -C $dir; rm $tarball"
fi
venv="if [ ! -x .venv/bin/python ]; then python3 -m pip install --user --quiet uv;"
venv+=" python3 -m uv venv --seed --python $(shell_quote "$PYTHON_VERSION") .venv; fi"
on_workers all "set -e; $fetch; cd $dir; $venv; .venv/bin/pip install --quiet -e \".[tpu]\""
