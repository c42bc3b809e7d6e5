"""The project's one decoder: prefill the prompts, then decode against a KV cache.

Prompts are left-padded to one length P (the padding is segment 0, which no
real token attends to), so every row's last prompt token sits at slot P - 1 and
every row writes its next token at the same slot: one write index for the
batch, as in gemma's sampler. Positions count each row's own tokens. Each layer
keeps keys and values for L = P + N slots, allocated once; prefill writes the
prompts, then a `lax.while_loop` of one-token steps (compiled once per
(B, P, N)) runs until N tokens or until every row has emitted EOS.

Each row has its own switch: one Switch whose source ids are one per row (B, 1)
and whose exclude is one set or one per row (B, E), or a list of Switches, one
per row (rows are grouped by mode and decoded group by group). The sinks are
gathered or dense as the model config says, per layer with `per_layer_masks`.

Shapes: B rows, P prompt buffer, N new tokens, L = P + N cache slots, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nullearn import ledger as ledger_lib
from nullearn.attention import LayerCache
from nullearn.data.tokenizer import EOS_ID
from nullearn.model import ModelConfig
from nullearn.switch import Switch


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is chosen; temperature 0 is greedy (argmax)."""

  temperature: float = 0.0
  top_k: int = 0  # keep the k most likely tokens (0: all)
  top_p: float = 1.0  # keep the fewest most likely tokens whose mass reaches top_p
  seed: int = 0

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f"--temperature: must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"--top_k: must be >= 0 (0: no cut), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"--top_p: must be in (0, 1], got {self.top_p}")


GREEDY = Sampling()


@dataclasses.dataclass(frozen=True)
class Samples:
  tokens: np.ndarray  # int32 [rows, N]: each row's new tokens, 0 from its EOS on
  lengths: np.ndarray  # int32 [rows]: new tokens before EOS (N if none came)


def init_cache(cfg: ModelConfig, batch: int, length: int) -> tuple[LayerCache, ...] | LayerCache:
  """One empty LayerCache per layer; scanned blocks take one stacked on a leading layer axis."""
  shape = (batch, length, cfg.num_kv_heads, cfg.head_dim)
  if cfg.scan_layers:
    shape = (cfg.num_layers, *shape)
    return LayerCache(jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))
  return tuple(
    LayerCache(jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))
    for _ in range(cfg.num_layers)
  )


def sample(
  graphdef,
  params,
  prompts: Sequence[np.ndarray],
  switch: Switch | Sequence[Switch],
  max_new_tokens: int,
  *,
  sampling: Sampling = GREEDY,
  eos_id: int | None = EOS_ID,
  ledger: ledger_lib.Ledger | None = None,
  what: str = "switch",
  vocab_limit: int | None = None,
  pad_to: int | None = None,
) -> Samples:
  """Continues each prompt (token ids, BOS first) by up to `max_new_tokens` tokens.

  `eos_id=None` never stops early (EOS is a token like any other). A switch that
  asks for one of `ledger`'s sources is refused (`ForgottenSourceError`, naming
  `what`). `vocab_limit` keeps ids below it (the tokenizer's vocabulary);
  `pad_to` fixes the prompt buffer P (one compile for calls of varied lengths).
  """
  if not len(prompts):
    raise ValueError("no prompts to continue")
  if max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens: must be at least 1, got {max_new_tokens}")
  lengths = np.asarray([len(p) for p in prompts])
  if lengths.min() < 1:
    raise ValueError("every prompt needs at least one token (BOS)")
  P = int(max(lengths.max(), pad_to or 0))
  tokens_BxP = np.zeros((len(prompts), P), np.int32)
  segment_ids_BxP = np.zeros((len(prompts), P), np.int32)
  for i, p in enumerate(prompts):
    tokens_BxP[i, P - len(p) :] = p
    segment_ids_BxP[i, P - len(p) :] = 1
  ledger = ledger or ledger_lib.Ledger()
  groups = (
    [(np.arange(len(prompts)), switch)]
    if isinstance(switch, Switch)
    else _groups(switch, len(prompts))
  )
  out = np.zeros((len(prompts), max_new_tokens), np.int32)
  out_lengths = np.zeros(len(prompts), np.int32)
  vocab_size = nnx.merge(graphdef, params).cfg.vocab_size if vocab_limit is None else vocab_limit
  for rows, s in groups:
    new_BxN, n_B = _decode(
      graphdef,
      params,
      tokens_BxP[rows],
      segment_ids_BxP[rows],
      _per_row(ledger.check(s, what)),
      jax.random.key(sampling.seed),
      jnp.float32(sampling.temperature),
      jnp.float32(sampling.top_p),
      jnp.int32(-1 if eos_id is None else eos_id),
      max_new_tokens=max_new_tokens,
      top_k=sampling.top_k,
      vocab_limit=vocab_size,
    )
    out[rows], out_lengths[rows] = np.asarray(new_BxN), np.asarray(n_B)
  return Samples(out, out_lengths)


@functools.partial(
  jax.jit, static_argnums=(0,), static_argnames=("max_new_tokens", "top_k", "vocab_limit")
)
def _decode(
  graphdef,
  params,
  tokens_BxP,
  segment_ids_BxP,
  switch: Switch,
  key,
  temperature,
  top_p,
  eos_id,
  *,
  max_new_tokens: int,
  top_k: int,
  vocab_limit: int,
):
  model = nnx.merge(graphdef, params)
  (B, P), N = tokens_BxP.shape, max_new_tokens
  segment_ids_BxL = jnp.concatenate([segment_ids_BxP, jnp.ones((B, N), jnp.int32)], axis=1)
  positions_BxP = jnp.maximum(jnp.cumsum(segment_ids_BxP, axis=1) - 1, 0)
  lengths_B = segment_ids_BxP.sum(axis=1)
  pick = functools.partial(
    _pick, key=key, temperature=temperature, top_p=top_p, top_k=top_k, vocab_limit=vocab_limit
  )

  h_BxPxD, cache = model.hidden_cached(
    tokens_BxP, positions_BxP, switch, init_cache(model.cfg, B, P + N), 0, segment_ids_BxL
  )

  def emit(i, logits_Bx1xV, done_B, out_BxN, n_B):
    next_B = pick(logits_Bx1xV[:, 0], i)
    done_B = done_B | (next_B == eos_id)
    return next_B, done_B, out_BxN.at[:, i].set(jnp.where(done_B, 0, next_B)), n_B + ~done_B

  zeros_B = jnp.zeros((B,), jnp.int32)
  state = (
    jnp.int32(1),
    *emit(0, model.logits(h_BxPxD[:, -1:]), zeros_B > 0, jnp.zeros((B, N), jnp.int32), zeros_B),
    cache,
    params,
  )

  def step(state):
    i, last_B, done_B, out_BxN, n_B, cache, params = state
    # The weights ride in the loop state: scanned blocks must be merged from the loop's trace.
    model = nnx.merge(graphdef, params)
    h_Bx1xD, cache = model.hidden_cached(
      last_B[:, None], (lengths_B + i - 1)[:, None], switch, cache, P + i - 1, segment_ids_BxL
    )
    return (i + 1, *emit(i, model.logits(h_Bx1xD), done_B, out_BxN, n_B), cache, params)

  _, _, _, out_BxN, n_B, _, _ = jax.lax.while_loop(
    lambda s: (s[0] < N) & ~jnp.all(s[2]), step, state
  )
  return out_BxN, n_B


def _pick(logits_BxV, step, *, key, temperature, top_p, top_k: int, vocab_limit: int):
  """The next token of each row: argmax at temperature 0, else a draw after top-k, top-p."""
  V = logits_BxV.shape[-1]
  if vocab_limit < V:
    logits_BxV = jnp.where(jnp.arange(V) < vocab_limit, logits_BxV, -jnp.inf)

  def draw(x_BxV):
    x_BxV = x_BxV / temperature
    if top_k:
      kth_Bx1 = jax.lax.top_k(x_BxV, min(top_k, V))[0][:, -1:]
      x_BxV = jnp.where(x_BxV < kth_Bx1, -jnp.inf, x_BxV)
    x_BxV = jax.lax.cond(top_p < 1, functools.partial(_top_p, top_p=top_p), lambda x: x, x_BxV)
    return jax.random.categorical(jax.random.fold_in(key, step), x_BxV).astype(jnp.int32)

  return jax.lax.cond(
    temperature > 0, draw, lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32), logits_BxV
  )


def _top_p(x_BxV, top_p):
  """Logits outside the nucleus at -inf: the most likely tokens until their mass >= top_p."""
  sorted_BxV = jnp.sort(x_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass of the more likely ones
  cut_Bx1 = jnp.min(jnp.where(before_BxV < top_p, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(x_BxV < cut_Bx1, -jnp.inf, x_BxV)


def _per_row(switch: Switch) -> Switch:
  """Source ids as one per row, (B, 1) or (1, 1): a generated token takes its row's source."""
  if switch.mode != "source" or switch.source_ids.shape[-1] == 1:
    return switch
  ids = np.asarray(switch.source_ids)
  if not np.all(ids == ids[:, :1]):
    raise ValueError("a decoded row is one source: give one source id per row, not per token")
  return dataclasses.replace(switch, source_ids=jnp.asarray(ids[:, :1]))


def _groups(switches: Sequence[Switch], rows: int) -> list[tuple[np.ndarray, Switch]]:
  """Per-row switches as batched ones: the rows of one mode and with or without exclusions
  share a Switch (ids (B, 1), exclude (E,) if shared else (B, E))."""
  if len(switches) != rows:
    raise ValueError(f"{len(switches)} switches for {rows} prompts: give one per prompt")
  kinds: dict[tuple[str, bool], list[int]] = {}
  for i, s in enumerate(switches):
    if s.exclude is not None and s.exclude.ndim == 2 and s.exclude.shape[0] != 1:
      raise ValueError(f"row {i}'s switch excludes per row for {s.exclude.shape[0]} rows")
    kinds.setdefault((s.mode, s.exclude is not None), []).append(i)
  out = []
  for (mode, excludes), idx in kinds.items():
    ids = None
    if mode == "source":
      ids = np.concatenate(
        [np.asarray(_per_row(switches[i]).source_ids).reshape(1, -1) for i in idx]
      )
    exclude = None
    if excludes:
      sets = [np.unique(np.asarray(switches[i].exclude)) for i in idx]
      width = max(len(e) for e in sets)
      exclude = (
        sets[0]
        if all(np.array_equal(e, sets[0]) for e in sets)
        else np.stack([np.pad(e, (0, width - len(e)), mode="edge") for e in sets])
      )
    out.append(
      (
        np.asarray(idx),
        Switch(
          mode,
          None if ids is None else jnp.asarray(ids),
          None if exclude is None else jnp.asarray(exclude),
        ),
      )
    )
  return out
