"""Loading a trained run, scoring cloze options, and generation under a switch.

A run is loaded with its forget ledger applied: the forgotten sources' sinks
are zeroed in `Run.params`, so no path through the weights can serve them, and
every entry point here (`Run.model()`, `option_nll`, `generate`) refuses a
switch that asks for one (`ledger.ForgottenSourceError`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from nullearn import attention, batching, losses, sampler, surgery
from nullearn import checkpoint as ckpt_lib
from nullearn import ledger as ledger_lib
from nullearn import model as model_lib
from nullearn import router as router_lib
from nullearn.data.records import Probe
from nullearn.data.tokenizer import Tokenizer
from nullearn.model import ModelConfig, Transformer
from nullearn.router import PromptRouter
from nullearn.switch import Switch
from nullearn.writer import progress


@dataclasses.dataclass
class Run:
  """A trained model with its tokenizer and metadata; `params` is a pure dict.

  `ledger` lists the forgotten sources: their sinks are already zeroed in
  `params`, and a switch asking for them is refused (`check`).
  """

  model_cfg: ModelConfig
  graphdef: Any
  params: Any
  tokenizer: Tokenizer
  meta: dict[str, Any]
  ledger: ledger_lib.Ledger = dataclasses.field(default_factory=ledger_lib.Ledger)
  workdir: str = ""
  step: int = 0  # the checkpoint's training step

  def model(self, params=None) -> ServedModel:
    return ServedModel(
      nnx.merge(self.graphdef, self.params if params is None else params), self.ledger
    )

  def router(self) -> PromptRouter:
    """The run's prompt router, `<workdir>/router` (built by `nullearn router`); it never
    returns a forgotten source."""
    return PromptRouter.load(epath.Path(self.workdir) / router_lib.DIRECTORY).without(
      self.ledger.ids
    )

  def check(self, switch: Switch, what: str = "switch") -> Switch:
    """`switch`, unless it asks for a forgotten source's sinks (ForgottenSourceError)."""
    return self.ledger.check(switch, what)

  @property
  def context(self) -> int:
    """The longest input the model was trained on (its `data.seq_len`)."""
    return int(self.meta["config"]["data"]["seq_len"])


class ServedModel:
  """A run's Transformer behind its ledger: a call whose switch names a forgotten source
  is refused. `module` is the nnx module itself (for nnx transforms); its weights hold
  none of the forgotten sinks either."""

  def __init__(self, module: Transformer, ledger: ledger_lib.Ledger):
    self.module = module
    self.ledger = ledger

  def __call__(self, tokens_BxT, segment_ids_BxT, positions_BxT, switch: Switch | None):
    return self.module(tokens_BxT, segment_ids_BxT, positions_BxT, self._checked(switch))

  def hidden(self, tokens_BxT, segment_ids_BxT, positions_BxT, switch: Switch | None):
    return self.module.hidden(tokens_BxT, segment_ids_BxT, positions_BxT, self._checked(switch))

  def hidden_from_embeddings(self, x_BxTxD, segment_ids_BxT, positions_BxT, switch: Switch | None):
    return self.module.hidden_from_embeddings(
      x_BxTxD, segment_ids_BxT, positions_BxT, self._checked(switch)
    )

  def __getattr__(self, name):
    return getattr(self.module, name)

  def _checked(self, switch):
    return switch if switch is None else self.ledger.check(switch)


def with_ledger(run: Run, ledger: ledger_lib.Ledger) -> Run:
  """`run` with `ledger`'s sources removed from its weights and refused by its entry points."""
  if not len(ledger):
    return dataclasses.replace(run, ledger=ledger)
  params = surgery.remove_sinks(run.params, run.model_cfg.geometry, ledger.ids)
  return dataclasses.replace(run, params=params, ledger=ledger)


def load_run(
  workdir: str | epath.PathLike,
  model_cfg: ModelConfig | None = None,
  *,
  device: jax.Device | None = None,
  apply_ledger: bool = True,
) -> Run:
  """Restores the latest checkpoint's parameters (not the optimizer) from `workdir`,
  with its forget ledger applied.

  The parameters land on `device` (default: this process's first), whatever
  topology saved them: a checkpoint of a 64-chip pod loads in a 1-GPU Colab.
  `model_cfg`, if given, must agree with the checkpoint's sink geometry.
  `apply_ledger=False` is the evaluation's escape, and only that: `nullearn eval`
  measures the counterfactual (its "sink on" condition, the NULL's post-hoc
  baselines and attacks need the forgotten sinks), and `nullearn export` scores
  the retained probes before the removal. Nothing that serves a model uses it.
  """
  workdir = epath.Path(workdir)
  ledger = ledger_lib.read(workdir) if apply_ledger else None  # a corrupt ledger fails first
  ckpt, step = ckpt_lib.require_checkpoint(workdir)
  meta = ckpt.read_meta(step)
  saved_cfg = ModelConfig.from_config(meta["config"]["model"])
  layout = saved_cfg.scan_layers  # how the checkpoint stores the blocks
  if model_cfg is not None:
    ckpt_lib.check_geometry(meta["sink_geometry"], model_cfg.geometry, f"{ckpt.directory}/{step}")
    saved_cfg = model_cfg
  try:
    attention.resolve(saved_cfg.attention, saved_cfg.dtype)
  except ValueError:  # a kernel of the training host (splash on TPU): this host picks its own
    saved_cfg = dataclasses.replace(saved_cfg, attention="auto")
  _, params, _ = model_lib.abstract(dataclasses.replace(saved_cfg, scan_layers=layout))
  graphdef = model_lib.abstract(saved_cfg)[0]
  here = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  # Orbax restores onto the saved topology unless the target says where each array goes.
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), params)
  state = model_lib.to_layout(ckpt.restore_params(step, target), saved_cfg.scan_layers)
  tokenizer = Tokenizer.load(workdir / "tokenizer.model")
  if tokenizer.fingerprint != meta.get("tokenizer"):
    raise ckpt_lib.CheckpointMismatchError(
      f"{workdir}/tokenizer.model is not the tokenizer {ckpt.directory}/{step} was trained with"
    )
  ckpt.close()
  run = Run(saved_cfg, graphdef, state, tokenizer, meta, workdir=str(workdir), step=step)
  return with_ledger(run, ledger) if apply_ledger else run


@dataclasses.dataclass(frozen=True)
class OptionRows:
  """Every (probe, option) as one row: option 0 is the answer, then the distractors."""

  tokens: list[np.ndarray]  # int32, BOS + the prompt's last tokens + the option
  starts: np.ndarray  # int64 [rows]: where the option begins in its row
  probe: np.ndarray  # int32 [rows]
  option: np.ndarray  # int32 [rows]


def option_rows(tokenizer: Tokenizer, probes: Sequence[Probe], context: int) -> OptionRows:
  """Rows of at most `context + 1` tokens: a prompt too long is cut from the left (after
  BOS), as the model never saw a longer context; an option that tokenizes to nothing or
  leaves no room for a prompt is refused."""
  rows, starts, probe_idx, option_idx = [], [], [], []
  for i, p in enumerate(probes):
    prompt = tokenizer.encode_document(p.prompt)[:-1]  # BOS + prompt, no EOS
    for j, option in enumerate((p.answer, *p.distractors)):
      answer = np.asarray(tokenizer.encode(option), np.int32)
      if not len(answer):
        raise ValueError(f"probe {i} ({p.prompt!r}): option {option!r} tokenizes to nothing")
      if len(answer) >= context:
        raise ValueError(
          f"probe {i} ({p.prompt!r}): option {option!r} is {len(answer)} tokens, "
          f"the model's context is {context}"
        )
      row, start = scored_row(prompt, answer, context)
      rows.append(row)
      starts.append(start)
      probe_idx.append(i)
      option_idx.append(j)
  return OptionRows(
    rows, np.asarray(starts), np.asarray(probe_idx, np.int32), np.asarray(option_idx, np.int32)
  )


def scored_row(
  prompt_ids: np.ndarray, continuation_ids: np.ndarray, context: int
) -> tuple[np.ndarray, int]:
  """(row, where the continuation starts): BOS + prompt + continuation in at most
  `context + 1` tokens, the prompt cut from the left (after BOS) when too long."""
  keep = context - len(continuation_ids)  # the row is at most context + 1 tokens
  cut = (
    prompt_ids
    if len(prompt_ids) <= keep
    else np.concatenate([prompt_ids[:1], prompt_ids[len(prompt_ids) - keep + 1 :]])
  )
  return np.concatenate([cut, continuation_ids]).astype(np.int32), len(cut)


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_option_nll(graphdef, params, tokens_BxL, starts_B, lengths_B, switch: Switch):
  inputs, targets = tokens_BxL[:, :-1], tokens_BxL[:, 1:]
  segment_ids = (inputs > 0).astype(jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  target_pos = positions + 1  # row position of each target
  w = ((target_pos >= starts_B[:, None]) & (target_pos < lengths_B[:, None])).astype(jnp.float32)
  logits = nnx.merge(graphdef, params)(inputs, segment_ids, positions, switch)
  return losses.sequence_nll(logits, targets, w) / jnp.maximum(w.sum(-1), 1.0)


def row_nll(
  run: Run, tokens_BxL, starts_B, lengths_B, switch: Switch, *, params=None
) -> np.ndarray:
  """Mean token NLL of each row from its start to its length, [B], under `switch`
  (refused if it asks for a forgotten source)."""
  return np.asarray(
    _mean_option_nll(
      run.graphdef,
      run.params if params is None else params,
      tokens_BxL,
      starts_B,
      lengths_B,
      run.check(switch),
    )
  )


SwitchFn = Callable[[np.ndarray], Switch]


def option_nll(
  run: Run,
  probes: Sequence[Probe],
  switch_for: SwitchFn,
  *,
  params=None,
  max_tokens: int = 32_768,
  desc: str | None = None,
) -> np.ndarray:
  """Mean token NLL of every option, [probes, 1 + distractors] (NaN past a probe's options).

  `switch_for(probe_indices)` gives the switch for a batch of rows (e.g. each
  probe's routed source); padding rows reuse a real row's probe. Rows are
  batched by length, at most `max_tokens` tokens a batch.
  """
  rows = option_rows(run.tokenizer, probes, run.context)
  lengths = np.asarray([len(r) for r in rows.tokens])
  params = run.params if params is None else params
  out = np.zeros(len(lengths), np.float32)
  batches = list(batching.token_batches(lengths, max_tokens))
  for idx, m, width in progress(batches, desc=desc):
    tokens = batching.pad_rows([rows.tokens[i] for i in idx], width)
    nll = row_nll(
      run, tokens, rows.starts[idx], lengths[idx], switch_for(rows.probe[idx]), params=params
    )
    out[idx[:m]] = nll[:m]
  table = np.full((len(probes), int(rows.option.max()) + 1), np.nan, np.float32)
  table[rows.probe, rows.option] = out
  return table


def per_token_switch(
  source_ids: Sequence[int],
  exclude: Sequence[int] = (),
  exclude_per_probe: Sequence[int] | None = None,
) -> SwitchFn:
  """Each row on the sinks of `source_ids[probe]` (its own or its routed source).

  `exclude` is switched off for every probe; `exclude_per_probe[i]` only for
  probe i (each forgotten source switched off on its own).
  """
  ids = np.asarray(source_ids, np.int64)
  per_probe = None if exclude_per_probe is None else np.asarray(exclude_per_probe, np.int64)

  def switch_for(probe_idx: np.ndarray) -> Switch:
    if per_probe is None:
      return Switch.sources(ids[probe_idx][:, None], exclude=exclude)
    rows = per_probe[probe_idx][:, None]
    if len(exclude):
      rows = np.concatenate(
        [rows, np.broadcast_to(np.asarray(exclude), (len(rows), len(exclude)))], axis=1
      )
    return Switch.sources(ids[probe_idx][:, None], exclude=rows)

  return switch_for


def fixed_switch(switch: Switch) -> SwitchFn:
  return lambda probe_idx: switch


def generate(
  run: Run,
  prompt: str,
  switch: Switch,
  max_new_tokens: int = 16,
  *,
  sampling: sampler.Sampling = sampler.GREEDY,
  params=None,
) -> str:
  """The continuation of `prompt` under `switch` (greedy unless `sampling` says otherwise)."""
  return generate_batch(run, [prompt], [switch], max_new_tokens, sampling=sampling, params=params)[
    0
  ]


def generate_batch(
  run: Run,
  prompts: Sequence[str],
  switches: Switch | Sequence[Switch],
  max_new_tokens: int = 16,
  *,
  sampling: sampler.Sampling = sampler.GREEDY,
  params=None,
) -> list[str]:
  """Continuations of `prompts`, each row under its own switch (or one for all), stopping
  at EOS. A switch asking for a forgotten source is refused (ForgottenSourceError).

  A prompt whose tokens and `max_new_tokens` exceed the model's context is
  refused, not cut: the model never saw later positions, and a cut prompt
  would silently answer another question.
  """
  for switch in [switches] if isinstance(switches, Switch) else switches:
    run.check(switch, "--source")
  if max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens: must be at least 1, got {max_new_tokens}")
  encoded = []
  for prompt in prompts:
    if not prompt.strip():
      raise ValueError("--prompt: is empty")
    ids = run.tokenizer.encode_document(prompt)[:-1]  # BOS + prompt, no EOS
    if len(ids) + max_new_tokens > run.context:
      raise ValueError(
        f"--prompt: {len(ids)} tokens (with BOS) and --max_new_tokens "
        f"{max_new_tokens} exceed the model's context of {run.context} tokens; "
        "shorten the prompt or ask for fewer tokens"
      )
    encoded.append(ids)
  out = sampler.sample(
    run.graphdef,
    run.params if params is None else params,
    encoded,
    switches,
    max_new_tokens,
    sampling=sampling,
    ledger=run.ledger,
    what="--source",
    vocab_limit=min(run.model_cfg.vocab_size, run.tokenizer.vocab_size),
  )
  return [run.tokenizer.decode(row[:n]) for row, n in zip(out.tokens, out.lengths)]
