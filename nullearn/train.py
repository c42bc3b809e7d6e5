"""Training: a jitted, sharded step over (params, optimizer state) and a resumable loop."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from typing import Any, Sequence

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
from nullearn.data import pipeline
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


def abstract_model(model_cfg: ModelConfig):
  """graphdef, abstract params (pure dict) and their logical axis names; allocates nothing."""
  model = nnx.eval_shape(lambda: Transformer(model_cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  logical = jax.tree.map(lambda v: jax.sharding.PartitionSpec(*v.get_metadata()["out_sharding"]),
                         state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return graphdef, nnx.to_pure_dict(state), nnx.to_pure_dict(logical)


def make_setup(config: ml_collections.ConfigDict, steps: int,
               mesh: jax.sharding.Mesh | None = None) -> Setup:
  model_cfg = ModelConfig.from_config(config.model)
  mesh = mesh or sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  graphdef, params, logical = abstract_model(model_cfg)
  schedule = optim.learning_rate(config.train, steps)
  tx = optim.optimizer(config.train, schedule)
  opt_state = jax.eval_shape(tx.init, params)
  param_sh = sharding.tree_shardings(logical, params, mesh)
  opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, opt_state, param_sh,
      transform_non_params=lambda _: sharding.replicated(mesh))
  abstract = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt_state)
  shardings = TrainState(sharding.replicated(mesh), param_sh, opt_sh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  return Setup(model_cfg, graphdef, tx, schedule, mesh, abstract, shardings, steps, config.seed)


def init_state(setup: Setup) -> TrainState:
  def init():
    model = Transformer(setup.model_cfg, nnx.Rngs(setup.seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return TrainState(jnp.zeros((), jnp.int32), params, setup.tx.init(params))
  return jax.jit(init, out_shardings=setup.state_shardings)()


def loss_fn(params, graphdef, batch):
  model = nnx.merge(graphdef, params)
  logits = model(batch["inputs"], batch["segment_ids"], batch["positions"],
                 Switch.sources(batch["source_ids"]))
  return losses.mean_nll(logits, batch["targets"], batch["weights"])


def make_train_step(setup: Setup):
  """The jitted step: state in, state out (donated), with explicit shardings."""

  def step(state: TrainState, batch):
    (loss, tokens), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, setup.graphdef, batch)
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "tokens": tokens,
               "lr": setup.schedule(state.step)}
    return TrainState(state.step + 1, params, opt_state), metrics

  batch_sh = {k: sharding.batch_sharding(setup.mesh) for k in pipeline.BATCH_KEYS}
  return jax.jit(step, in_shardings=(setup.state_shardings, batch_sh),
                 out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
                 donate_argnums=0)


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
  """SIGTERM (a preemption notice) ends the loop with a final checkpoint.

  One process: a signal handler sets a flag. Several: JAX's preemption service
  (on with jax.distributed) agrees on one step at which every host stops, since
  hosts that stopped at different steps would hang in the collective save.
  """

  def __init__(self):
    self._requested = False
    self._previous = None
    self._multihost = jax.process_count() > 1

  def __enter__(self):
    if not self._multihost:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: no handler, nothing to restore
        self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self._requested = True

  def reached(self, step: int) -> bool:
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def process_batch_size(config: ml_collections.ConfigDict, shard_count: int) -> int:
  """`data.batch_size` is global; each process loads its share of every batch."""
  if config.data.batch_size % shard_count:
    raise ValueError(f"data.batch_size={config.data.batch_size} is not divisible by the "
                     f"{shard_count} processes")
  return config.data.batch_size // shard_count


def make_dataset(config: ml_collections.ConfigDict, docs, tokenizer: Tokenizer, *,
                 num_epochs: int | None = None, shard_index: int | None = None,
                 shard_count: int | None = None):
  """The run's input pipeline; by default this process's share of the corpus."""
  gather = config.model.pool and config.model.sink_impl == "gather"
  shard_count = jax.process_count() if shard_count is None else shard_count
  return pipeline.training_dataset(
      docs, tokenizer, seq_len=config.data.seq_len,
      batch_size=process_batch_size(config, shard_count),
      seed=config.data.shuffle_seed, num_epochs=num_epochs,
      packing_bins=config.data.packing_bins,
      shard_index=jax.process_index() if shard_index is None else shard_index,
      shard_count=shard_count,
      worker_count=config.data.worker_count,
      max_segments=config.model.max_segments if gather else None)


def resolve_steps(config: ml_collections.ConfigDict, docs, tokenizer: Tokenizer) -> int:
  """`train.steps`, or the number of batches in `train.epochs` passes over the corpus.

  Every process counts the whole corpus, so all agree on the number of steps.
  """
  if config.train.steps > 0:
    return int(config.train.steps)
  if not isinstance(docs, (tuple, list)):
    raise ValueError("set train.steps for a corpus read lazily (TFDS): counting epochs would "
                     "tokenize all of it first")
  one_epoch = make_dataset(config, docs, tokenizer, num_epochs=1, shard_index=0, shard_count=1)
  return max(1, math.ceil(pipeline.count_batches(one_epoch) * config.train.epochs))


def run_metadata(config, setup: Setup, tokenizer: Tokenizer) -> dict[str, Any]:
  return {"config": json.loads(config.to_json()),
          "sink_geometry": setup.model_cfg.sink_geometry,
          "tokenizer": tokenizer.fingerprint,
          "steps": setup.steps}


def train(config: ml_collections.ConfigDict, workdir: str | epath.PathLike,
          docs: Sequence[Document], tokenizer: Tokenizer, *,
          mesh: jax.sharding.Mesh | None = None, stop_after: int | None = None,
          writer: MetricWriter | None = None) -> TrainResult:
  """Trains (or resumes) the run in `workdir`; `stop_after` ends early at that step."""
  workdir = epath.Path(workdir)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but model.vocab_size is "
                     f"{config.model.vocab_size}")
  steps = resolve_steps(config, docs, tokenizer)
  setup = make_setup(config, steps, mesh)
  own_writer = writer is None
  writer = writer or MetricWriter(workdir)
  data_iter = iter(make_dataset(config, docs, tokenizer))
  ckpt = ckpt_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  meta = run_metadata(config, setup, tokenizer)
  state = _init_or_restore(setup, ckpt, data_iter, meta, writer)
  start = int(state.step)
  end = min(steps, stop_after) if stop_after is not None else steps
  step_fn = make_train_step(setup)
  bar = tqdm.tqdm(total=end, initial=start, desc=workdir.name, dynamic_ncols=True, leave=False,
                  disable=not (writer.interactive and config.train.progress))
  meter = _Meter(config, setup, writer, bar)
  preempted = False
  with sharding.active_mesh(setup.mesh), _Preemption() as preemption:
    for step in range(start, end):
      state, metrics = step_fn(state, device_batch(next(data_iter), setup.mesh))
      meter.push(step + 1, metrics)
      bar.update(1)
      preempted = preemption.reached(step + 1)
      if preempted or ((step + 1) % config.train.checkpoint_every == 0 and step + 1 < end):
        ckpt.save(step + 1, state, data_iter, meta)
      if preempted:
        writer.text(f"SIGTERM: saved checkpoint at step {step + 1}; exiting")
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


class _Meter:
  """Reads each step's metrics one step late, so the host never makes the device wait.

  Logs means over `train.log_every` steps: loss, tokens/s (global and per device),
  step time, learning rate and, on chips with a known peak, MFU.
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
    record.update(step=step, step_time=seconds,
                  tokens_per_sec=self.tokens / seconds,
                  tokens_per_sec_per_device=self.tokens / seconds / jax.device_count())
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


def _init_or_restore(setup: Setup, ckpt: ckpt_lib.Checkpointer, data_iter, meta, writer):
  """The newest readable checkpoint, or fresh parameters when there is none.

  A checkpoint that fails to restore (a corrupt or truncated file) is reported
  and the previous one is tried; if none can be read the run stops rather than
  silently starting over.
  """
  steps = ckpt.all_steps()
  if not steps:
    return init_state(setup)
  errors, skipped = [], []
  for step in reversed(steps):
    where = f"{ckpt.directory}/{step}"
    try:
      saved = ckpt.read_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{where}: unreadable metadata ({type(e).__name__}: {e})")
      skipped.append(step)
      writer.text(f"WARNING: {errors[-1]}; trying an older checkpoint")
      continue
    ckpt_lib.check_geometry(saved["sink_geometry"], setup.model_cfg, f"checkpoint {where}")
    if saved.get("tokenizer") != meta["tokenizer"]:
      raise ckpt_lib.CheckpointMismatchError(
          f"checkpoint {where} was trained with tokenizer {saved.get('tokenizer')}, "
          f"this run has {meta['tokenizer']}")
    try:
      state = ckpt.restore(step, setup.abstract_state, data_iter)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{where}: {type(e).__name__}: {e}")
      skipped.append(step)
      writer.text(f"WARNING: checkpoint {where} is corrupt or partial ({type(e).__name__}); "
                  "trying an older checkpoint")
      continue
    for bad in skipped:
      writer.text(f"WARNING: moved unreadable checkpoint to {ckpt.quarantine(bad)}")
    writer.text(f"resuming from {where}" + (f" (skipped {len(errors)} unreadable)" if errors else ""))
    return state
  raise ckpt_lib.CorruptCheckpointError(
      "no checkpoint could be restored:\n  " + "\n  ".join(errors)
      + "\nMove the checkpoints directory away to start over.")
