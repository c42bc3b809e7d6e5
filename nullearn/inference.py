"""Loading a trained run, scoring cloze options, and greedy generation under a switch."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath
from flax import nnx

from nullearn import checkpoint as ckpt_lib
from nullearn import losses
from nullearn.data.records import Probe
from nullearn.data.tokenizer import EOS_ID, Tokenizer
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch


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


def load_run(workdir: str | epath.PathLike, model_cfg: ModelConfig | None = None) -> Run:
  """Restores the latest checkpoint's parameters (not the optimizer) from `workdir`.

  `model_cfg`, if given, must agree with the checkpoint's sink geometry.
  """
  from nullearn.train import abstract_model  # pylint: disable=g-import-not-at-top
  workdir = epath.Path(workdir)
  ckpt, step = ckpt_lib.require_checkpoint(workdir)
  meta = ckpt.read_meta(step)
  saved_cfg = ModelConfig.from_config(meta["config"]["model"])
  if model_cfg is not None:
    ckpt_lib.check_geometry(meta["sink_geometry"], model_cfg, f"{ckpt.directory}/{step}")
    saved_cfg = model_cfg
  graphdef, params, _ = abstract_model(saved_cfg)
  state = ckpt.restore_params(step, params)
  tokenizer = Tokenizer.load(workdir / "tokenizer.model")
  if tokenizer.fingerprint != meta.get("tokenizer"):
    raise ckpt_lib.CheckpointMismatchError(
        f"{workdir}/tokenizer.model is not the tokenizer {ckpt.directory}/{step} was trained with")
  ckpt.close()
  return Run(saved_cfg, graphdef, state, tokenizer, meta)


@dataclasses.dataclass(frozen=True)
class OptionRows:
  """Every (probe, option) as one row: option 0 is the answer, then the distractors."""
  tokens: np.ndarray  # int32 [rows, L]
  weights: np.ndarray  # float32 [rows, L]: 1 on the option's tokens (as targets)
  probe: np.ndarray  # int32 [rows]
  option: np.ndarray  # int32 [rows]


def option_rows(tokenizer: Tokenizer, probes: Sequence[Probe]) -> OptionRows:
  rows, weights, probe_idx, option_idx = [], [], [], []
  for i, p in enumerate(probes):
    prompt = tokenizer.encode_document(p.prompt)[:-1]  # BOS + prompt, no EOS
    for j, option in enumerate((p.answer, *p.distractors)):
      answer = tokenizer.encode(option)
      rows.append(np.concatenate([prompt, answer]).astype(np.int32))
      weights.append(np.concatenate([np.zeros(len(prompt)), np.ones(len(answer))]))
      probe_idx.append(i)
      option_idx.append(j)
  length = max(len(r) for r in rows)
  tokens = np.zeros((len(rows), length), np.int32)
  w = np.zeros((len(rows), length), np.float32)
  for k, (r, wt) in enumerate(zip(rows, weights)):
    tokens[k, :len(r)] = r
    w[k, :len(r)] = wt
  return OptionRows(tokens, w, np.asarray(probe_idx, np.int32), np.asarray(option_idx, np.int32))


@functools.partial(jax.jit, static_argnums=(0,))
def _mean_option_nll(graphdef, params, tokens_BxL, weights_BxL, switch: Switch):
  inputs, targets, w = tokens_BxL[:, :-1], tokens_BxL[:, 1:], weights_BxL[:, 1:]
  segment_ids = (inputs > 0).astype(jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  logits = nnx.merge(graphdef, params)(inputs, segment_ids, positions, switch)
  return losses.sequence_nll(logits, targets, w) / jnp.maximum(w.sum(-1), 1.0)


SwitchFn = Callable[[np.ndarray], Switch]


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """(row indices [batch_size], how many are real) per batch: one compiled shape for
  all, the last batch padded with copies of the last row."""
  for start in range(0, n, batch_size):
    yield np.minimum(np.arange(start, start + batch_size), n - 1), min(batch_size, n - start)


def option_nll(run: Run, probes: Sequence[Probe], switch_for: SwitchFn, *,
               params=None, batch_size: int = 256, desc: str | None = None) -> np.ndarray:
  """Mean token NLL of every option, [probes, 1 + distractors].

  `switch_for(probe_indices)` gives the switch for a batch of rows (e.g. each
  probe's routed source); padding rows reuse the last probe.
  """
  rows = option_rows(run.tokenizer, probes)
  n = len(rows.probe)
  params = run.params if params is None else params
  out = []
  for idx, m in tqdm.tqdm(padded_batches(n, batch_size), total=-(-n // batch_size), desc=desc,
                          disable=desc is None, leave=False):
    switch = switch_for(rows.probe[idx])
    nll = _mean_option_nll(run.graphdef, params, rows.tokens[idx], rows.weights[idx], switch)
    out.append(np.asarray(nll)[:m])
  out = np.concatenate(out)
  num_options = 1 + len(probes[0].distractors)
  if any(len(p.distractors) + 1 != num_options for p in probes):
    return _ragged(out, rows, len(probes))
  return out.reshape(len(probes), num_options)


def _ragged(out, rows: OptionRows, num_probes: int) -> np.ndarray:
  width = int(rows.option.max()) + 1
  table = np.full((num_probes, width), np.nan, np.float32)
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

