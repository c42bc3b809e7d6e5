#!/usr/bin/env bash
# One short check on a single NVIDIA GPU: step time, tokens/s and MFU of the mid
# config for the NULL (dense and gathered sinks) and the plain transformer of the
# same width, then a short `nullearn train` of each with its logged throughput.
#
#   bash benchmarks/gpu_mid.sh OUT_DIR [WHEELS_DIR]
#
# For a machine whose Python already has JAX with CUDA but lacks some of this
# project's pure-Python dependencies: WHEELS_DIR holds their wheels, installed
# with --no-deps into a scratch directory (no network needed).
set -uo pipefail
out=${1:?usage: gpu_mid.sh OUT_DIR [WHEELS_DIR]}
wheels=${2:-}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -n "$wheels" ]; then
  "$py" -m pip install -q --no-deps --no-index --target /tmp/nullearn_extra "$wheels"/*.whl
  export PYTHONPATH="/tmp/nullearn_extra:$PWD"
  # Without an install, nullearn.configs (the configs/ folder) must be reachable by import.
  [ -e nullearn/configs ] || ln -s ../configs nullearn/configs
fi
"$py" - <<'PY' 2>&1 | tee "$out/versions.txt"
import jax, flax, optax, orbax.checkpoint as ocp
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", ocp.__version__, jax.devices())
PY
timeout 330 "$py" benchmarks/step_time.py --shapes mid --steps 20 \
    --out "$out/step_time_gpu.json" 2>&1 | grep -v "^W0\|^I0" | tee "$out/step_time_gpu.txt"
for variant in null plain; do
  arg=""; [ "$variant" = plain ] && arg=":plain"
  timeout 150 "$py" -m nullearn.cli train --config="configs/mid.py$arg" --workdir="/tmp/mid_$variant" \
      --config.train.steps=80 --config.train.log_every=20 --config.train.progress=False \
      --config.data.worker_count=4 --config.train.checkpoint_every=100000 2>&1 \
      | grep -v "^W0\|^I0" | tail -n 12 | tee "$out/train_$variant.txt"
  cp "/tmp/mid_$variant/metrics.jsonl" "$out/metrics_$variant.jsonl" 2>/dev/null || true
done
