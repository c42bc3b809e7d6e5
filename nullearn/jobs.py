"""Several training runs side by side, each in a single-threaded process.

On a small CPU, XLA gains little from a second thread at these model sizes, so
two runs in parallel finish in about 0.7x the time of one after the other.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any

from etils import epath

from nullearn import train
from nullearn.data.records import Document
from nullearn.data.tokenizer import Tokenizer
from nullearn.model import make_plain
from nullearn.writer import MetricWriter

_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


@dataclasses.dataclass
class Job:
  name: str
  config: Any  # ml_collections.ConfigDict
  workdir: epath.PathLike
  docs: Sequence[Document]


def comparison(
  config,
  workdir: epath.PathLike,
  docs: Sequence[Document],
  forget: Sequence[int],
  *,
  plain: bool = False,
) -> list[Job]:
  """The NULL on every source, the oracle retrained without `forget`, optionally the
  plain transformer of the same width: the runs an unlearning comparison needs."""
  workdir = epath.Path(workdir)
  oracle = copy.deepcopy(config)
  oracle.data.exclude_sources = tuple(int(i) for i in forget)
  runs = [
    Job("null", config, workdir / "null", docs),
    Job("oracle", oracle, workdir / "oracle", docs),
  ]  # the data layer leaves `forget` out
  if plain:
    plain_config = copy.deepcopy(config)
    make_plain(plain_config.model)
    runs.append(Job("plain", plain_config, workdir / "plain", docs))
  return runs


def run_one(job: Job, tokenizer: Tokenizer) -> None:
  workdir = epath.Path(job.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tokenizer.save(workdir / "tokenizer.model")
  t0 = time.time()
  writer = MetricWriter(workdir, prefix=job.name)
  result = train.train(job.config, workdir, job.docs, tokenizer, writer=writer)
  if result.history:
    writer.text(
      f"[{job.name}] {result.setup.steps} steps in {time.time() - t0:.0f}s, "
      f"final loss {result.history[-1]['loss']:.3f}"
    )
  writer.close()


def run_all(jobs: Sequence[Job], tokenizer: Tokenizer, *, parallel: bool = True) -> None:
  """Trains (or resumes) every job; with `parallel`, one process each, at once."""
  if not parallel:
    for job in jobs:
      run_one(job, tokenizer)
    return
  ctx = multiprocessing.get_context("spawn")
  procs = []
  for job in jobs:
    job = dataclasses.replace(job, config=job.config.copy_and_resolve_references())
    job.config.train.progress = False
    with _env(XLA_FLAGS=_SINGLE_THREAD):
      proc = ctx.Process(target=run_one, args=(job, tokenizer), name=job.name)
      proc.start()
    procs.append(proc)
  for proc in procs:
    proc.join()
  failed = [p.name for p in procs if p.exitcode != 0]
  if failed:
    raise RuntimeError(f"training failed for {failed}; see the log lines above")


@contextlib.contextmanager
def _env(**values):
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
