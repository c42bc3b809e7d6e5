"""Metrics to stdout, a JSONL file and TensorBoard event files (no TensorFlow needed)."""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any, Mapping

import jax
import tqdm


class MetricWriter:
  """Only JAX process 0 writes, so a pod produces one log, not one per host."""

  def __init__(self, logdir: str | pathlib.Path | None, *, stdout: bool = True,
               tensorboard: bool = True, prefix: str = ""):
    self.enabled = jax.process_index() == 0
    self.prefix = f"[{prefix}] " if prefix else ""
    self.stdout = stdout and self.enabled
    self._jsonl = None
    self._tb = None
    if logdir is not None and self.enabled:
      logdir = pathlib.Path(logdir)
      logdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = open(logdir / "metrics.jsonl", "a", buffering=1)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(str(logdir / "tb"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in metrics.items()}
    if self._jsonl:
      self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    if self._tb:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, int(step))
    if self.stdout:
      body = "  ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
      tqdm.tqdm.write(f"{self.prefix}[step {int(step)}] {body}", file=sys.stdout)

  def text(self, message: str) -> None:
    if self.stdout:
      tqdm.tqdm.write(message, file=sys.stdout)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


def _fmt(v: float) -> str:
  if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
    return f"{v:.3e}"
  return f"{v:.4f}"
