"""Orbax checkpoints of the train state, the Grain iterator and the run's metadata.

The metadata holds the config and the sink geometry (mask seed, backbone, pool,
active): masks are a function of those, so restoring under different ones would
silently give every source someone else's sinks. That is refused.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath

from nullearn.masks import SinkGeometry


class CheckpointMismatchError(ValueError):
  """The checkpoint was trained with another mask seed or sink geometry."""


class CorruptCheckpointError(RuntimeError):
  """Every checkpoint of a run failed to restore."""


class _IteratorSnapshot:
  """The iterator's state frozen at save time, so an async save cannot see later steps."""

  def __init__(self, iterator: grain.DatasetIterator):
    self._state = json.dumps(iterator.get_state(), indent=1).encode()

  def get_state(self) -> bytes:
    return self._state


def check_geometry(saved: dict[str, Any], wanted: SinkGeometry, where: str) -> None:
  """Raises CheckpointMismatchError naming every field that differs."""
  diffs = SinkGeometry.from_dict(saved).differences(wanted)
  if diffs:
    raise CheckpointMismatchError(
      f"{where} was trained with a different mask seed or sink geometry "
      f"(checkpoint vs requested: {'; '.join(diffs)}); its sources' masks would not match. "
      "Use the checkpoint's own model config, or train a new run in another workdir."
    )


# What a resumed run must share with its checkpoint, besides the sink geometry.
_PROVENANCE = {
  "architecture": "model shape",
  "param_layout": "parameter layout (model.scan_layers)",
  "tokenizer": "tokenizer",
  "data": "training data (corpus, excluded and held-out sources)",
  "schedule": "training schedule",
}


def check_resumable(saved: dict[str, Any], meta: dict[str, Any], where: str) -> None:
  """Refuses a resume that would change what the run is: its geometry, shape, tokenizer,
  data or schedule. Every field that differs is named; keys an older checkpoint lacks
  are not compared."""
  check_geometry(saved["sink_geometry"], SinkGeometry.from_dict(meta["sink_geometry"]), where)
  for key, what in _PROVENANCE.items():
    if key not in saved or saved[key] == meta[key]:
      continue
    old, new = saved[key], meta[key]
    if isinstance(old, dict) and isinstance(new, dict):
      diffs = "; ".join(
        f"{k}: checkpoint {old.get(k)!r}, requested {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
      )
    else:
      diffs = f"checkpoint {old!r}, requested {new!r}"
    raise CheckpointMismatchError(
      f"{where} belongs to another run: its {what} differs ({diffs}). Resume with the run's "
      "own config and data, or train a new run in another workdir."
    )


class Checkpointer:
  """Keeps the last `keep` checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str | epath.PathLike, *, keep: int = 2, async_save: bool = True):
    self.directory = absolute(workdir) / "checkpoints"
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(
    self, step: int, state, iterator: grain.DatasetIterator | None, meta: dict[str, Any]
  ) -> None:
    """`state` has .step, .params and .opt_state; params are saved apart for inference."""
    items = {
      "params": ocp.args.StandardSave(state.params),
      "opt": ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
      "meta": ocp.args.JsonSave(meta),
    }
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(iterator))
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def read_meta(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state, iterator: grain.DatasetIterator | None = None):
    """Restores the state (and the iterator in place); returns the state."""
    items = {
      "params": ocp.args.StandardRestore(abstract_state.params),
      "opt": ocp.args.StandardRestore(
        {"step": abstract_state.step, "opt_state": abstract_state.opt_state}
      ),
    }
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    return abstract_state.replace(
      step=out["opt"]["step"], params=out["params"], opt_state=out["opt"]["opt_state"]
    )

  def restore_params(self, step: int, abstract_params):
    return self._manager.restore(
      step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
    )["params"]

  def quarantine(self, step: int) -> epath.Path:
    """Moves an unreadable checkpoint aside (kept for inspection, no longer a step)."""
    bad = self.directory / f"corrupt-{step}-{int(time.time())}"
    (self.directory / str(step)).rename(bad)
    self._manager.reload()
    return bad

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def absolute(path: str | epath.PathLike) -> epath.Path:
  """Orbax wants absolute paths; gs:// paths already are."""
  path = epath.Path(path)
  return path if "://" in str(path) else epath.Path(path.absolute())


def require_checkpoint(workdir: str | epath.PathLike) -> tuple[Checkpointer, int]:
  """The run's checkpointer and latest step, or a clear FileNotFoundError."""
  workdir = epath.Path(workdir)
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(
      f"no checkpoint found: {workdir}/checkpoints does not exist "
      "(is this the workdir of a `nullearn train` run?)"
    )
  ckpt = Checkpointer(workdir, async_save=False)
  step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"no finished checkpoint in {ckpt.directory}")
  return ckpt, step
