"""Post-hoc unlearning baselines (GA, GD, NPO), relearning fine-tunes and held-out loss.

They change weights, where a NULL only switches sinks off, and run on the
project's own model code (plain transformers and NULLs alike), so an evaluation
can compare both kinds of forgetting on the same rows. Rows are dicts as
returned by `pipeline.document_rows`, one source's text per row; every loss is
built from one quantity, the summed NLL of each row (`losses.sequence_nll`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nullearn import losses
from nullearn.batching import padded_batches
from nullearn.data import pipeline
from nullearn.inference import Run
from nullearn.switch import Switch

Method = Literal["ga", "gd", "npo"]
Rows = dict[str, np.ndarray]
Batch = tuple[dict[str, np.ndarray], Switch | None]  # model inputs and the batch's switch
# Which sinks are on for a batch, from its source ids BxT; None suits a plain model (pool 0).
RowSwitchFn = Callable[[np.ndarray], Switch | None]
StepFn = Callable[[int, float], None]
# objective(nll_of, inputs) -> scalar loss; nll_of(batch) is the trained model's NLL per row.
Objective = Callable[[Callable[[Batch], jax.Array], Any], jax.Array]

METHODS = ("ga", "gd", "npo")
_MODEL_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
_GRAD_CLIP = 1.0


def ga_loss(nll_forget_B) -> jax.Array:
  """Gradient ascent: descending it raises the forget rows' NLL without bound."""
  return -jnp.mean(nll_forget_B)


def gd_loss(nll_forget_B, nll_retain_B) -> jax.Array:
  """Gradient difference: ascent on the forget rows, descent on the retain rows."""
  return ga_loss(nll_forget_B) + jnp.mean(nll_retain_B)


def npo_loss(logp_B, logp_ref_B, beta: float = 0.1, nll_retain_B=None) -> jax.Array:
  """Negative preference optimization (Zhang et al. 2024), plus the retain NLL if given.

  Unlike GA its gradient fades once the model is far below the reference, so
  it forgets without diverging; it equals (2/beta) log 2 where logp == logp_ref.
  """
  loss = -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(-beta * (logp_B - logp_ref_B)))
  return loss if nll_retain_B is None else loss + jnp.mean(nll_retain_B)


@functools.partial(jax.jit, static_argnums=(0,))
def _row_nll(graphdef, params, batch: Batch) -> jax.Array:
  """Summed NLL of each row, B: the batch loss every loop and `heldout_nll` share."""
  arrays, switch = batch
  logits = nnx.merge(graphdef, params)(
    arrays["inputs"], arrays["segment_ids"], arrays["positions"], switch
  )
  return losses.sequence_nll(logits, arrays["targets"], arrays["weights"])


def _ga_objective(nll_of, inputs) -> jax.Array:
  return ga_loss(nll_of(inputs["forget"]))


def _gd_objective(nll_of, inputs) -> jax.Array:
  return gd_loss(nll_of(inputs["forget"]), nll_of(inputs["retain"]))


def _npo_objective(nll_of, inputs) -> jax.Array:
  nll_retain_B = nll_of(inputs["retain"]) if "retain" in inputs else None
  return npo_loss(-nll_of(inputs["forget"]), inputs["ref_logp"], inputs["beta"], nll_retain_B)


def _next_token_objective(nll_of, inputs) -> jax.Array:
  """Token-weighted mean NLL, as in training: the relearning attack."""
  arrays, _ = inputs["rows"]
  return jnp.sum(nll_of(inputs["rows"])) / jnp.maximum(jnp.sum(arrays["weights"]), 1.0)


_OBJECTIVES: dict[str, Objective] = {
  "ga": _ga_objective,
  "gd": _gd_objective,
  "npo": _npo_objective,
}


def _optimizer(lr) -> optax.GradientTransformation:
  """Constant-lr AdamW without weight decay: decay would pull weights away on its own."""
  return optax.chain(optax.clip_by_global_norm(_GRAD_CLIP), optax.adamw(lr, weight_decay=0.0))


@jax.jit
def _start(params):
  """Params and a fresh optimizer state, through a jit so that `_step` keeps their shardings.

  (Without it the second step compiles again.) The state does not depend on the lr.
  """
  return params, _optimizer(0.0).init(params)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step(graphdef, objective: Objective, params, opt_state, inputs, lr):
  """One optimizer step on objective(nll_of, inputs); lr is traced, so any lr reuses it."""
  loss_fn = lambda p: objective(functools.partial(_row_nll, graphdef, p), inputs)
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = _optimizer(lr).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def _descend(
  run: Run,
  params,
  objective: Objective,
  inputs: Iterator[Any],
  steps: int,
  lr: float,
  on_step: StepFn | None,
) -> Iterator[Any]:
  """Yields the params after each of `steps` optimizer steps, one item of `inputs` each."""
  params, opt_state = _start(params)
  for i, step_inputs in zip(range(steps), inputs):
    params, opt_state, loss = _step(run.graphdef, objective, params, opt_state, step_inputs, lr)
    if on_step is not None:
      on_step(i + 1, float(loss))
    yield params


def _own_sources(source_ids_BxT: np.ndarray) -> Switch:
  """Each row on its own source's sinks, as in training (a plain model ignores it)."""
  return Switch.sources(source_ids_BxT)


def _check_rows(rows: Rows, name: str) -> int:
  """The number of rows; a clear error for anything `document_rows` would not return."""
  missing = [k for k in pipeline.BATCH_KEYS if k not in rows]
  if missing:
    raise ValueError(f"{name} lack {missing}; build them with pipeline.document_rows")
  lengths = {k: len(rows[k]) for k in pipeline.BATCH_KEYS}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{name} have arrays of different lengths: {lengths}")
  if not lengths["inputs"]:
    raise ValueError(f"{name} are empty")
  return lengths["inputs"]


def _check_batch_size(batch_size: int) -> None:
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")


def _batch(rows: Rows, idx: np.ndarray, switch_for: RowSwitchFn) -> Batch:
  return {k: rows[k][idx] for k in _MODEL_KEYS}, switch_for(rows["source_ids"][idx])


def _batches(
  rows: Rows, batch_size: int, switch_for: RowSwitchFn, seed: int, stream: int
) -> Iterator[Batch]:
  """Endless batches of `batch_size` rows, reshuffled every pass; deterministic in the seed."""
  n = len(rows["inputs"])
  rng = np.random.default_rng([seed, stream])
  order = np.empty(0, np.int64)
  while True:
    while len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(n)])
    yield _batch(rows, order[:batch_size], switch_for)
    order = order[batch_size:]


def unlearn(
  run: Run,
  rows_forget: Rows,
  *,
  method: Method,
  steps: int = 50,
  lr: float = 1e-4,
  batch_size: int = 16,
  rows_retain: Rows | None = None,
  switch_for: RowSwitchFn | None = None,
  params=None,
  beta: float = 0.1,
  seed: int = 0,
  on_step: StepFn | None = None,
):
  """Post-hoc unlearning of `rows_forget` from `params` (default `run.params`).

  "gd" needs `rows_retain`; "npo" adds their NLL when given, and its reference
  is the starting params, frozen. `switch_for(source_ids_BxT)` picks each
  batch's sinks (default: each row's own source). `on_step(step, loss)` sees
  every step's loss. Returns the new params, a pure dict like the old ones.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if method == "gd" and rows_retain is None:
    raise ValueError("gradient difference ('gd') needs rows_retain to descend on")
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}")
  _check_batch_size(batch_size)
  if method == "npo" and beta <= 0:
    raise ValueError(f"NPO needs beta > 0, got {beta}")
  _check_rows(rows_forget, "rows_forget")
  if rows_retain is not None:
    _check_rows(rows_retain, "rows_retain")
  switch_for = switch_for or _own_sources
  start = run.params if params is None else params
  forget = _batches(rows_forget, batch_size, switch_for, seed, 0)
  retain = None if rows_retain is None else _batches(rows_retain, batch_size, switch_for, seed, 1)
  inputs = _unlearning_inputs(run, start, method, beta, forget, retain)
  params = start
  for params in _descend(run, start, _OBJECTIVES[method], inputs, steps, lr, on_step):  # noqa: B007
    pass
  return params


def _unlearning_inputs(
  run: Run,
  ref_params,
  method: Method,
  beta: float,
  forget: Iterator[Batch],
  retain: Iterator[Batch] | None,
) -> Iterator[dict[str, Any]]:
  """Each step's batches; NPO's reference log-likelihoods come from the frozen start (no grad)."""
  for forget_batch in forget:
    inputs = {"forget": forget_batch}
    if retain is not None:
      inputs["retain"] = next(retain)
    if method == "npo":
      inputs["ref_logp"] = -_row_nll(run.graphdef, ref_params, forget_batch)
      inputs["beta"] = jnp.float32(beta)
    yield inputs


def _check_step_counts(step_counts: Iterable[int]) -> list[int]:
  counts = sorted(set(int(s) for s in step_counts))
  if not counts:
    raise ValueError("step_counts is empty")
  if counts[0] < 0:
    raise ValueError(f"step counts must be >= 0, got {counts[0]}")
  return counts


def finetune_snapshots(
  run: Run,
  rows: Rows,
  *,
  step_counts: Iterable[int] = (1, 2, 5, 10, 20, 50),
  lr: float = 1e-4,
  batch_size: int = 16,
  switch_for: RowSwitchFn | None = None,
  params=None,
  seed: int = 0,
  on_step: StepFn | None = None,
) -> dict[int, Any]:
  """Plain next-token fine-tuning on `rows` (the relearning attack), params after each count.

  One run of max(step_counts) steps, snapshots taken on the way; 0 gives the
  starting params only when asked for.
  """
  counts = _check_step_counts(step_counts)
  _check_batch_size(batch_size)
  _check_rows(rows, "rows")
  switch_for = switch_for or _own_sources
  start = run.params if params is None else params
  inputs = ({"rows": batch} for batch in _batches(rows, batch_size, switch_for, seed, 0))
  snapshots = {0: start} if counts[0] == 0 else {}
  steps = _descend(run, start, _next_token_objective, inputs, counts[-1], lr, on_step)
  for step, params in enumerate(steps, start=1):
    if step in counts:
      snapshots[step] = params
  return snapshots


def heldout_nll(
  run: Run, rows: Rows, *, switch_for: RowSwitchFn | None = None, params=None, batch_size: int = 64
) -> float:
  """Mean NLL per weighted token of `rows` (not per row), in batches of one compiled shape.

  The last batch is padded with copies of the last row at weight 0.
  """
  n = _check_rows(rows, "rows")
  _check_batch_size(batch_size)
  if not np.sum(rows["weights"]):
    raise ValueError("rows have no weighted tokens to score")
  switch_for = switch_for or _own_sources
  params = run.params if params is None else params
  sums = []
  for idx, m in padded_batches(n, batch_size):
    arrays, switch = _batch(rows, idx, switch_for)
    arrays["weights"] = arrays["weights"] * (np.arange(batch_size) < m)[:, None]
    sums.append(jnp.sum(_row_nll(run.graphdef, params, (arrays, switch))))
  total = np.sum(jax.device_get(sums), dtype=np.float64)
  return float(total / np.sum(rows["weights"], dtype=np.float64))
