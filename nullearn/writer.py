"""Metrics to stdout, a JSONL file and TensorBoard event files (no TensorFlow needed).

Every stdout line starts with the UTC time, so a pod's logs (files, not
terminals) say when each step and message happened.

The log directory may be local or on GCS (`gs://...`, as a pod's workdir is):
object stores cannot append, so there the JSONL file is rewritten whole at most
every `remote_flush_seconds` and at close.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import tqdm
from etils import epath


class MetricWriter:
  """Only JAX process 0 writes, so a pod produces one log, not one per host."""

  def __init__(
    self,
    logdir: str | epath.PathLike | None,
    *,
    prefix: str = "",
    remote_flush_seconds: float = 60.0,
  ):
    self.enabled = jax.process_index() == 0
    self.prefix = f"[{prefix}] " if prefix else ""
    self.stdout = self.enabled
    # A progress bar only where someone watches: in a log file its redraws are noise.
    self.interactive = self.enabled and sys.stdout.isatty()
    self._jsonl = None
    self._tb = None
    if logdir is not None and self.enabled:
      logdir = epath.Path(logdir)
      logdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = _JsonlFile(logdir / "metrics.jsonl", remote_flush_seconds)
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(logdir / "tb"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in metrics.items()}
    if self._jsonl:
      self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **scalars}))
    if self._tb:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, int(step))
    if self.stdout:
      body = "  ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
      _print(f"{self.prefix}[step {int(step)}] {body}")

  def text(self, message: str) -> None:
    if self.stdout:
      _print(self.prefix + message)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


class _JsonlFile:
  """Appends locally; on an object store keeps the lines and rewrites the object."""

  def __init__(self, path: epath.Path, flush_seconds: float):
    self.path = path
    self.remote = "://" in str(path)
    self.flush_seconds = flush_seconds
    self._last_flush = time.monotonic()
    if self.remote:
      self._lines = path.read_text().splitlines() if path.exists() else []
    else:
      self._file = open(path, "a", buffering=1)  # noqa: SIM115 - held open until close()

  def write(self, line: str) -> None:
    if not self.remote:
      self._file.write(line + "\n")
      return
    self._lines.append(line)
    if time.monotonic() - self._last_flush > self.flush_seconds:
      self.flush()

  def flush(self) -> None:
    if self.remote:
      self.path.write_text("".join(line + "\n" for line in self._lines))
      self._last_flush = time.monotonic()

  def close(self) -> None:
    if self.remote:
      self.flush()
    else:
      self._file.close()


def _print(message: str) -> None:
  """Each line stamped; through tqdm, so a bar on a terminal is redrawn below it."""
  stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  tqdm.tqdm.write("\n".join(f"{stamp} {line}" for line in message.split("\n")), file=sys.stdout)


def _fmt(v: float) -> str:
  if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
    return f"{v:.3e}"
  return f"{v:.4f}"


def progress(iterable, desc: str | None = None, total: int | None = None):
  """A progress bar on a terminal only: a log file gets no carriage-return bars."""
  return tqdm.tqdm(
    iterable, desc=desc, total=total, leave=False, disable=desc is None or not sys.stderr.isatty()
  )
