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
  plan = dryrun.plan(config)
  assert rss_mib() - before < 300, "a 1B model in float32 would take 4 GiB"
  assert plan["mesh"] == {"data": 1, "fsdp": 64, "tensor": 1} and plan["devices"] == 64
  assert 0.95e9 < plan["parameters"] < 1.05e9
  # fully sharded: each of 64 chips holds about 1/64 of the float32 parameters, and AdamW
  # holds two moments of each
  assert plan["per_device_param_bytes"] == pytest.approx(4 * plan["parameters"] / 64, rel=0.05)
  assert plan["per_device_optimizer_bytes"] == pytest.approx(
      2 * plan["per_device_param_bytes"], rel=0.01)
  model_cfg = ModelConfig.from_config(config.model)
  assert plan["train_flops_per_token"] == flops.train_flops_per_token(model_cfg, 1024)
  assert 5.9e9 < plan["train_flops_per_token"] < 6.4e9  # ~6 x parameters
  assert plan["expected_tokens_per_sec"] == pytest.approx(
      0.4 * 275e12 * 64 / plan["train_flops_per_token"])


def test_cli_dry_run_prints_the_plan():
  out = subprocess.run([sys.executable, "-m", "nullearn.cli", "train", "--config=configs/1b.py",
                        "--dry_run"], capture_output=True, text=True, timeout=300,
                       cwd=str(__import__("pathlib").Path(__file__).parents[1]))
  assert out.returncode == 0, out.stderr[-2000:]
  for text in ("parameters", "1.007 B", "per device: optimizer", "FLOPs per token",
               "tokens/s", "tpu v4"):
    assert text in out.stdout


def test_unknown_chip_is_a_clear_error():
  config = importlib.import_module("nullearn.configs.1b").get_config()
  config.mesh.chip = "abacus"
  with pytest.raises(ValueError, match="unknown chip 'abacus'"):
    dryrun.plan(config)
