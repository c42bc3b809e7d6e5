"""Loading a trained run, scoring cloze options, and greedy generation under a switch."""

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

from nullearn import batching, losses
from nullearn import checkpoint as ckpt_lib
from nullearn import model as model_lib
from nullearn.data.records import Probe
from nullearn.data.tokenizer import EOS_ID, Tokenizer
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch
from nullearn.writer import progress


@dataclasses.dataclass
class Run:
  """A trained model with its tokenizer and metadata; `params` is a pure dict."""
  model_cfg: ModelConfig
  graphdef: Any
  params: Any
  tokenizer: Tokenizer
  meta: dict[str, Any]

  def model(self, params=None) -> Transformer:
    return nnx.merge(self.graphdef, self.params if params is None else params)

  @property
  def context(self) -> int:
    """The longest input the model was trained on (its `data.seq_len`)."""
    return int(self.meta["config"]["data"]["seq_len"])


def load_run(workdir: str | epath.PathLike, model_cfg: ModelConfig | None = None, *,
             device: jax.Device | None = None) -> Run:
  """Restores the latest checkpoint's parameters (not the optimizer) from `workdir`.

  The parameters land on `device` (default: this process's first), whatever
  topology saved them: a checkpoint of a 64-chip pod loads in a 1-GPU Colab.
  `model_cfg`, if given, must agree with the checkpoint's sink geometry.
  """
  workdir = epath.Path(workdir)
  ckpt, step = ckpt_lib.require_checkpoint(workdir)
  meta = ckpt.read_meta(step)
  saved_cfg = ModelConfig.from_config(meta["config"]["model"])
  if model_cfg is not None:
    ckpt_lib.check_geometry(meta["sink_geometry"], model_cfg.geometry, f"{ckpt.directory}/{step}")
    saved_cfg = model_cfg
  graphdef, params, _ = model_lib.abstract(saved_cfg)
  here = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  # Orbax restores onto the saved topology unless the target says where each array goes.
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), params)
  state = ckpt.restore_params(step, target)
  tokenizer = Tokenizer.load(workdir / "tokenizer.model")
  if tokenizer.fingerprint != meta.get("tokenizer"):
    raise ckpt_lib.CheckpointMismatchError(
        f"{workdir}/tokenizer.model is not the tokenizer {ckpt.directory}/{step} was trained with")
  ckpt.close()
  return Run(saved_cfg, graphdef, state, tokenizer, meta)


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
      keep = context - len(answer)  # the row is at most context + 1 tokens
      if keep < 1:
        raise ValueError(f"probe {i} ({p.prompt!r}): option {option!r} is {len(answer)} tokens, "
                         f"the model's context is {context}")
      cut = prompt if len(prompt) <= keep else np.concatenate(
          [prompt[:1], prompt[len(prompt) - keep + 1:]])
      rows.append(np.concatenate([cut, answer]).astype(np.int32))
      starts.append(len(cut))
      probe_idx.append(i)
      option_idx.append(j)
  return OptionRows(rows, np.asarray(starts), np.asarray(probe_idx, np.int32),
                    np.asarray(option_idx, np.int32))


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_option_nll(graphdef, params, tokens_BxL, starts_B, lengths_B, switch: Switch):
  inputs, targets = tokens_BxL[:, :-1], tokens_BxL[:, 1:]
  segment_ids = (inputs > 0).astype(jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  target_pos = positions + 1  # row position of each target
  w = ((target_pos >= starts_B[:, None]) & (target_pos < lengths_B[:, None])).astype(jnp.float32)
  logits = nnx.merge(graphdef, params)(inputs, segment_ids, positions, switch)
  return losses.sequence_nll(logits, targets, w) / jnp.maximum(w.sum(-1), 1.0)


SwitchFn = Callable[[np.ndarray], Switch]


def option_nll(run: Run, probes: Sequence[Probe], switch_for: SwitchFn, *,
               params=None, max_tokens: int = 32_768, desc: str | None = None) -> np.ndarray:
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
    nll = _mean_option_nll(run.graphdef, params, tokens, rows.starts[idx], lengths[idx],
                           switch_for(rows.probe[idx]))
    out[idx[:m]] = np.asarray(nll)[:m]
  table = np.full((len(probes), int(rows.option.max()) + 1), np.nan, np.float32)
  table[rows.probe, rows.option] = out
  return table


def per_token_switch(source_ids: Sequence[int], exclude: Sequence[int] = (),
                     exclude_per_probe: Sequence[int] | None = None) -> SwitchFn:
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
      rows = np.concatenate([rows, np.broadcast_to(np.asarray(exclude), (len(rows), len(exclude)))],
                            axis=1)
    return Switch.sources(ids[probe_idx][:, None], exclude=rows)
  return switch_for


def fixed_switch(switch: Switch) -> SwitchFn:
  return lambda probe_idx: switch


@functools.partial(jax.jit, static_argnums=(0,))
def _next_token(graphdef, params, tokens_1xL, length, switch: Switch):
  segment_ids = (jnp.arange(tokens_1xL.shape[1]) < length).astype(jnp.int32)[None]
  positions = jnp.arange(tokens_1xL.shape[1])[None]
  logits = nnx.merge(graphdef, params)(tokens_1xL, segment_ids, positions, switch)
  return jnp.argmax(logits[0, length - 1])


def generate(run: Run, prompt: str, switch: Switch, max_new_tokens: int = 16, *,
             params=None) -> str:
  """Greedy continuation of `prompt`; `switch` sees a 1xL row (source ids broadcast)."""
  params = run.params if params is None else params
  prompt_ids = run.tokenizer.encode_document(prompt)[:-1]
  total = len(prompt_ids) + max_new_tokens
  tokens = np.zeros((1, total), np.int32)
  tokens[0, :len(prompt_ids)] = prompt_ids
  length = len(prompt_ids)
  if switch.mode == "source":
    switch = dataclasses.replace(switch, source_ids=jnp.broadcast_to(
        switch.source_ids.reshape(-1)[:1][None], (1, total)))
  while length < total:
    nxt = int(_next_token(run.graphdef, params, tokens, length, switch))
    if nxt == EOS_ID:
      break
    tokens[0, length] = nxt
    length += 1
  return run.tokenizer.decode(tokens[0, len(prompt_ids):length])

