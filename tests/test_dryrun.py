import importlib
import resource
import subprocess
import sys

import pytest

from nullearn import dryrun, flops
from nullearn.model import ModelConfig


def rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_1b_plan_on_a_v4_pod_allocates_nothing():
  config = importlib.import_module("nullearn.configs.1b").get_config()
  before = rss_mib()
  plan = dryrun.plan(config, compile_memory=False)
  assert rss_mib() - before < 300, "a 1B model in float32 would take 4 GiB"
  assert plan["mesh"] == {"data": 1, "fsdp": 64, "tensor": 1} and plan["devices"] == 64
  assert 0.95e9 < plan["parameters"] < 1.05e9
  # fully sharded: each of 64 chips holds about 1/64 of the float32 parameters, and AdamW
  # holds two moments of each
  assert plan["per_device_param_bytes"] == pytest.approx(4 * plan["parameters"] / 64, rel=0.05)
  assert plan["per_device_optimizer_bytes"] == pytest.approx(
    2 * plan["per_device_param_bytes"], rel=0.01
  )
  model_cfg = ModelConfig.from_config(config.model)
  assert plan["train_flops_per_token"] == flops.train_flops_per_token(model_cfg, 1024)
  # dense-equivalent: ~6 x parameters, plus attention over the whole 1024 x 1024 square
  assert 6.2e9 < plan["dense_train_flops_per_token"] < 6.7e9
  assert plan["train_flops_per_token"] <= plan["dense_train_flops_per_token"]
  assert plan["expected_tokens_per_sec"] == pytest.approx(
    0.4 * 275e12 * 64 / plan["train_flops_per_token"]
  )
  # 100 of 7692 sinks a source: each random source removes ~1.3% of the pool
  assert plan["forgetting_budget"] == {0.01: 0, 0.1: 8, 0.5: 52}


def dry_run(*args):
  return subprocess.run(
    [sys.executable, "-m", "nullearn.cli", "train", "--dry_run", *args],
    capture_output=True,
    text=True,
    timeout=1200,
    cwd=str(__import__("pathlib").Path(__file__).parents[1]),
  )


def test_cli_dry_run_compiles_the_1b_step_for_one_chip():
  """The 1B step compiled for one of 64 faked devices: its shard of the parameters and
  optimizer, and a peak that fits a v4 chip."""
  out = dry_run("--config=configs/1b.py")
  assert out.returncode == 0, out.stderr[-2000:]
  for text in (
    "parameters",
    "1.007 B",
    "per device: optimizer",
    "GFLOP executed",
    "dense-equivalent",
    "tokens/s",
    "tpu v4",
    "52 sources remove 50% of the pool",
    "4 rows; XLA:cpu memory analysis",
    "of 32 GiB HBM: fits",
  ):
    assert text in out.stdout
  arguments = float(out.stdout.split("arguments ")[1].split(" GiB")[0])
  assert arguments == pytest.approx((4 * 3 * 1.007e9 / 64) / 2**30, rel=0.05)  # params + Adam


def test_cli_dry_run_refuses_a_step_that_does_not_fit():
  """Tiny's model with 8192 rows of 128 tokens on each of 8 faked v5e chips (16 GiB)."""
  out = dry_run(
    "--config=configs/tiny.py",
    "--config.mesh.num_devices=8",
    "--config.mesh.chip=tpu v5e",
    "--config.data.batch_size=65536",
  )
  assert out.returncode == 2, out.stdout + out.stderr[-2000:]
  assert "8192 rows; XLA:cpu memory analysis" in out.stdout and "DOES NOT FIT" in out.stdout
  assert "nullearn train: error: data.batch_size: 8192 rows per device need" in out.stderr
  fits = dry_run(
    "--config=configs/tiny.py", "--config.mesh.num_devices=8", "--config.mesh.chip=tpu v5e"
  )
  assert fits.returncode == 0 and "of 16 GiB HBM: fits" in fits.stdout, fits.stderr[-2000:]


def test_unknown_chip_is_a_clear_error():
  config = importlib.import_module("nullearn.configs.1b").get_config()
  config.mesh.chip = "abacus"
  with pytest.raises(ValueError, match="unknown chip 'abacus'"):
    dryrun.plan(config)
