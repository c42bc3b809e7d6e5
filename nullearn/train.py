"""Training: a jitted, sharded step over (params, optimizer state) and a resumable loop."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from etils import epath
from flax import nnx, struct
from jax.experimental import multihost_utils

from nullearn import checkpoint as ckpt_lib
from nullearn import flops, losses, optim, sharding
from nullearn import model as model_lib
from nullearn.data import corpus as corpus_lib
from nullearn.data import pipeline
from nullearn.data.corpus import Corpus, TrainingSet
from nullearn.data.records import Document
from nullearn.data.tokenizer import Tokenizer
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch
from nullearn.writer import MetricWriter


@struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything about a run that follows from its config, before any array exists."""

  model_cfg: ModelConfig
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  abstract_state: TrainState
  state_shardings: TrainState
  steps: int
  seed: int


def make_setup(
  config: ml_collections.ConfigDict, steps: int, mesh: jax.sharding.Mesh | None = None
) -> Setup:
  model_cfg = ModelConfig.from_config(config.model)
  mesh = mesh or sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  graphdef, params, logical = model_lib.abstract(model_cfg)
  schedule = optim.learning_rate(config.train, steps)
  tx = optim.optimizer(config.train, schedule)
  opt_state = jax.eval_shape(tx.init, params)
  param_sh = sharding.tree_shardings(logical, params, mesh)
  opt_sh = optax.tree_map_params(
    tx,
    lambda _, s: s,
    opt_state,
    param_sh,
    transform_non_params=lambda _: sharding.replicated(mesh),
  )
  abstract = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt_state)
  shardings = TrainState(sharding.replicated(mesh), param_sh, opt_sh)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
  )
  return Setup(model_cfg, graphdef, tx, schedule, mesh, abstract, shardings, steps, config.seed)


def init_state(setup: Setup) -> TrainState:
  def init():
    model = Transformer(setup.model_cfg, nnx.Rngs(setup.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return TrainState(jnp.zeros((), jnp.int32), params, setup.tx.init(params))

  return jax.jit(init, out_shardings=setup.state_shardings)()


def loss_fn(params, graphdef, batch):
  model = nnx.merge(graphdef, params)
  logits = model(
    batch["inputs"], batch["segment_ids"], batch["positions"], Switch.sources(batch["source_ids"])
  )
  return losses.mean_nll(logits, batch["targets"], batch["weights"])


def make_train_step(setup: Setup):
  """The jitted step: state in, state out (donated), with explicit shardings."""

  def step(state: TrainState, batch):
    (loss, tokens), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, setup.graphdef, batch
    )
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "tokens": tokens,
      "lr": setup.schedule(state.step),
    }
    return TrainState(state.step + 1, params, opt_state), metrics

  batch_sh = {k: sharding.batch_sharding(setup.mesh) for k in pipeline.BATCH_KEYS}
  return jax.jit(
    step,
    in_shardings=(setup.state_shardings, batch_sh),
    out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
    donate_argnums=0,
  )


def device_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh):
  """Each process passes its local rows; together they form the global batch."""
  sh = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, batch[k]) for k in pipeline.BATCH_KEYS}


@dataclasses.dataclass
class TrainResult:
  setup: Setup
  state: TrainState
  history: list[dict[str, float]]
  preempted: bool = False


class _Preemption:
  """SIGTERM (a preemption notice) or SIGINT (Ctrl-C) ends the loop with a final checkpoint.

  One process: a signal handler sets a flag. Several: JAX's preemption service
  (on with jax.distributed) agrees on one step at which every host stops, since
  hosts that stopped at different steps would hang in the collective save.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name = ""
    self._previous = {}
    self._multihost = jax.process_count() > 1

  def __enter__(self):
    if not self._multihost:
      try:
        self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
      except ValueError:  # not the main thread: no handler, nothing to restore
        self._previous = {}
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name:  # a second Ctrl-C while the checkpoint is written: stop now
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    if self._multihost:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = "SIGTERM"
        return True
      return False
    return bool(self.signal_name)

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


def resolve_steps(
  config: ml_collections.ConfigDict, data: TrainingSet, tokenizer: Tokenizer
) -> int:
  """`train.steps`, or the number of batches in `train.epochs` passes over the training set.

  Every process counts the whole set, so all agree on the number of steps.
  """
  if config.train.steps > 0:
    return int(config.train.steps)
  if not isinstance(data.documents, tuple):
    raise ValueError(
      "train.steps: set it for a corpus read lazily (TFDS); counting epochs "
      "would tokenize all of it first"
    )
  one_epoch = pipeline.make_dataset(
    config, data, tokenizer, num_epochs=1, shard_index=0, shard_count=1
  )
  return max(1, math.ceil(pipeline.count_batches(one_epoch) * config.train.epochs))


# Model fields that change the parameters or what they compute (not how: remat, sink_impl,
# scan_layers; the last changes how they are stored, `param_layout`).
_ARCHITECTURE = (
  "vocab_size",
  "d_model",
  "num_layers",
  "num_heads",
  "num_kv_heads",
  "head_dim",
  "rope_base",
  "norm_eps",
  "tie_embeddings",
  "param_dtype",
)
# Train fields that a resumed run must keep, or its schedule would change under it.
_SCHEDULE = (
  "epochs",
  "lr",
  "end_lr_ratio",
  "warmup_steps",
  "weight_decay",
  "b1",
  "b2",
  "eps",
  "grad_clip",
)


def run_metadata(config, setup: Setup, tokenizer: Tokenizer, data: TrainingSet) -> dict[str, Any]:
  """What the run is, saved with every checkpoint and compared on resume and in eval."""
  model = config.model
  return {
    "config": json.loads(config.to_json()),
    "sink_geometry": setup.model_cfg.geometry.to_dict(),
    "architecture": {k: model[k] for k in _ARCHITECTURE},
    "tokenizer": tokenizer.fingerprint,
    "data": data.provenance(),
    "schedule": {
      "steps": setup.steps,
      "batch_size": config.data.batch_size,
      "seq_len": config.data.seq_len,
      "shuffle_seed": config.data.shuffle_seed,
      "seed": config.seed,
      **{k: config.train[k] for k in _SCHEDULE},
    },
    "param_layout": "stacked" if setup.model_cfg.scan_layers else "per_layer",
    "steps": setup.steps,
  }


def check_config(config: ml_collections.ConfigDict) -> None:
  """One-line errors for settings that would otherwise fail steps later, or silently."""
  t, d = config.train, config.data
  for name, value, low in (
    ("train.steps", t.steps, 0),
    ("train.checkpoint_every", t.checkpoint_every, 1),
    ("train.log_every", t.log_every, 1),
    ("train.keep_checkpoints", t.keep_checkpoints, 1),
    ("data.batch_size", d.batch_size, 1),
    ("data.seq_len", d.seq_len, 2),
  ):
    if value < low:
      raise ValueError(f"{name}: must be >= {low}, got {value}")
  if t.steps == 0 and not t.epochs > 0:
    raise ValueError(f"train.epochs: must be > 0 when train.steps is 0, got {t.epochs}")


def train(
  config: ml_collections.ConfigDict,
  workdir: str | epath.PathLike,
  corpus: Corpus | Sequence[Document],
  tokenizer: Tokenizer,
  *,
  mesh: jax.sharding.Mesh | None = None,
  stop_after: int | None = None,
  writer: MetricWriter | None = None,
) -> TrainResult:
  """Trains (or resumes) the run in `workdir` on `corpus` minus the sources its config
  leaves out; `stop_after` ends early at that step.

  A resume that would change the run (see `checkpoint.check_resumable`) is refused
  before anything in the workdir is written.
  """
  workdir = epath.Path(workdir)
  check_config(config)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ValueError(
      f"model.vocab_size: the tokenizer has {tokenizer.vocab_size} pieces but "
      f"model.vocab_size is {config.model.vocab_size}"
    )
  data = corpus_lib.training_set(corpus, config)
  steps = resolve_steps(config, data, tokenizer)
  setup = make_setup(config, steps, mesh)
  meta = run_metadata(config, setup, tokenizer, data)
  data_iter = iter(pipeline.make_dataset(config, data, tokenizer))
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  notes: list[str] = []
  try:
    state = _init_or_restore(setup, ckpt, data_iter, meta, notes.append)
  except Exception:
    ckpt.close()
    raise
  own_writer = writer is None
  writer = writer or MetricWriter(workdir)
  writer.text(
    f"training on {len(data.documents):,} documents ({len(data.excluded)} sources "
    f"excluded, {len(data.heldout)} held out), {steps:,} steps"
  )
  writer.text(flops_note(setup.model_cfg, config.data.seq_len))
  for note in notes:
    writer.text(note)
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
  start = int(state.step)
  end = min(steps, stop_after) if stop_after is not None else steps
  step_fn = make_train_step(setup)
  bar = tqdm.tqdm(
    total=end,
    initial=start,
    desc=workdir.name,
    dynamic_ncols=True,
    leave=False,
    disable=not (writer.interactive and config.train.progress),
  )
  meter = _Meter(config, setup, writer, bar)
  preempted = False
  with jax.set_mesh(setup.mesh), _Preemption() as preemption:
    for step in range(start, end):
      state, metrics = step_fn(state, device_batch(next(data_iter), setup.mesh))
      meter.push(step + 1, metrics)
      bar.update(1)
      preempted = preemption.reached(step + 1)
      if preempted or ((step + 1) % config.train.checkpoint_every == 0 and step + 1 < end):
        ckpt.save(step + 1, state, data_iter, meta)
      if preempted:
        writer.text(f"{preemption.signal_name}: saved checkpoint at step {step + 1}; exiting")
        break
    jax.block_until_ready(state)
    meter.flush()
  bar.close()
  if not preempted and end > start:
    ckpt.save(end, state, data_iter, meta)
  ckpt.close()
  if own_writer:  # a gs:// log is only rewritten now and then: write its tail
    writer.close()
  return TrainResult(setup, state, meter.history, preempted)


def flops_note(model_cfg: ModelConfig, seq_len: int) -> str:
  executed = flops.train_flops_per_token(model_cfg, seq_len)
  dense = flops.dense_train_flops_per_token(model_cfg, seq_len)
  return (
    f"train FLOPs per token: {executed:.4g} executed ({model_cfg.sink_impl}, "
    f"{flops.mlp_columns(model_cfg):,} MLP columns a token; MFU counts these), "
    f"{dense:.4g} dense-equivalent"
  )


class _Meter:
  """Reads each step's metrics one step late, so the host never makes the device wait.

  Logs means over `train.log_every` steps: loss, tokens/s (global and per device),
  step time, learning rate and, on chips with a known peak, MFU of the executed FLOPs.
  """

  def __init__(self, config, setup: Setup, writer: MetricWriter, bar):
    self.writer, self.bar, self.every = writer, bar, config.train.log_every
    self.tokens = config.data.batch_size * config.data.seq_len
    self.flops = flops.train_flops_per_token(setup.model_cfg, config.data.seq_len) * self.tokens
    self.peak = flops.peak_flops()
    self.history: list[dict[str, float]] = []
    self._window: list[dict[str, float]] = []
    self._pending = None
    self._last = time.perf_counter()

  def push(self, step: int, metrics) -> None:
    if self._pending is not None:  # the device is already running `step`
      self._record()
    self._pending = (step, metrics)

  def flush(self) -> None:
    if self._pending is not None:
      self._record()
      self._pending = None
    if self._window:
      self._log()

  def _record(self) -> None:
    step, metrics = self._pending
    now = time.perf_counter()
    seconds, self._last = now - self._last, now
    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
    record.update(
      step=step,
      step_time=seconds,
      tokens_per_sec=self.tokens / seconds,
      tokens_per_sec_per_device=self.tokens / seconds / jax.device_count(),
    )
    if self.peak:
      record["mfu"] = self.flops / seconds / (self.peak * jax.device_count())
    self.history.append(record)
    self._window.append(record)
    if len(self._window) >= self.every:
      self._log()

  def _log(self) -> None:
    last = self._window[-1]
    mean = {k: float(np.mean([r[k] for r in self._window])) for k in last if k != "step"}
    mean["tokens"] = last["tokens"]
    self.writer.write(int(last["step"]), mean)
    self.bar.set_postfix(loss=f"{mean['loss']:.3f}", tok_s=f"{mean['tokens_per_sec']:.0f}")
    self._window.clear()


def _init_or_restore(setup: Setup, ckpt: ckpt_lib.Checkpointer, data_iter, meta, note):
  """The newest readable checkpoint, or fresh parameters when there is none.

  A checkpoint that fails to restore (a corrupt or truncated file) is reported
  and the previous one is tried; if none can be read the run stops rather than
  silently starting over. One that is readable but belongs to another run
  (`check_resumable`) stops it with a mismatch, not as corruption.
  """
  steps = ckpt.all_steps()
  if not steps:
    return init_state(setup)
  errors, skipped = [], []
  for step in reversed(steps):
    where = f"checkpoint {ckpt.directory}/{step}"
    try:
      saved = ckpt.read_meta(step)
    except Exception as e:  # noqa: BLE001 - any unreadable file means: try an older one
      errors.append(f"{where}: unreadable metadata ({type(e).__name__}: {e})")
      skipped.append(step)
      note(f"WARNING: {errors[-1]}; trying an older checkpoint")
      continue
    ckpt_lib.check_resumable(saved, meta, where)
    try:
      state = ckpt.restore(step, setup.abstract_state, data_iter)
    except Exception as e:  # noqa: BLE001
      errors.append(f"{where}: {type(e).__name__}: {e}")
      skipped.append(step)
      note(
        f"WARNING: {where} is corrupt or partial ({type(e).__name__}); trying an older checkpoint"
      )
      continue
    for bad in skipped:
      note(f"WARNING: moved unreadable checkpoint to {ckpt.quarantine(bad)}")
    note(f"resuming from {where}" + (f" (skipped {len(errors)} unreadable)" if errors else ""))
    return state
  raise ckpt_lib.CorruptCheckpointError(
    "no checkpoint could be restored:\n  "
    + "\n  ".join(errors)
    + "\nMove the checkpoints directory away to start over."
  )
