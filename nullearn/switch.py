"""The switch: which sinks are on, passed to the forward pass beside the tokens.

Nothing about the selection lives in the parameters, so unlearning a source is
a change of argument (``exclude``), not of weights.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nullearn import masks

Mode = Literal["source", "backbone", "expected"]


class GatheredSinks(NamedTuple):
  """Sink columns gathered per packed row: slot s holds the sinks of the row's s-th document.

  Equivalent to the dense mask (zero columns are skipped, not computed) and
  exact: a token uses only its own slot, so a sink shared by two documents of
  a row is never counted twice. Padding (segment 0) gets no sinks; it is never
  attended to nor trained on, so only its own outputs differ from the dense path.
  """
  columns_BxN: jax.Array  # int32 MLP columns, N = max_segments * active
  on_BxTxN: jax.Array  # 1 where the column is one of the token's own sinks


@struct.dataclass
class Switch:
  """Selects the MLP neurons that are on for every token.

  mode "source": each token's own source's sinks (training, "sink on");
  "backbone": all sinks off; "expected": every sink at active/pool, as dropout
  inference does. In every mode the sinks of the `exclude` sources are off:
  `exclude` is one set of ids for the whole batch, (E,), or one per row, (B, E)
  (pad a shorter row by repeating one of its ids).
  """
  mode: Mode = struct.field(pytree_node=False)
  source_ids: jax.Array | None = None  # uint32 BxT, mode "source" only
  exclude: jax.Array | None = None  # uint32 (E,) or (B, E), forgotten sources

  @classmethod
  def sources(cls, source_ids, exclude=()) -> "Switch":
    if isinstance(source_ids, (np.ndarray, list, tuple, int, np.integer)):
      source_ids = masks.check_source_ids(source_ids)
    return cls("source", jnp.asarray(source_ids, jnp.uint32), _exclude(exclude))

  @classmethod
  def backbone(cls) -> "Switch":
    return cls("backbone")

  @classmethod
  def expected(cls, exclude=()) -> "Switch":
    return cls("expected", None, _exclude(exclude))

  def mlp_mask(self, backbone: int, pool: int, active: int, seed: int,
               dtype, layer: int | None = None) -> jax.Array:
    """Multiplier of the MLP hidden units, broadcastable to (B, T, backbone + pool)."""
    width = backbone + pool
    if self.mode == "backbone":
      return jnp.asarray(np.arange(width) < backbone, dtype)
    if self.mode == "expected":
      on_F = jnp.asarray(np.where(np.arange(width) < backbone, 1.0, active / pool), dtype)
    elif self.mode == "source":
      on_F = _token_mask(self.source_ids, backbone, pool, active, seed, layer)
    else:
      raise ValueError(f"unknown switch mode {self.mode!r}")
    if self.exclude is not None:
      gone = self._gone(pool, active, seed, layer)
      keep = jnp.concatenate([jnp.ones(gone.shape[:-1] + (backbone,), bool), ~gone], axis=-1)
      on_F = jnp.where(keep, on_F, 0)
    return on_F.astype(dtype)

  def _gone(self, pool: int, active: int, seed: int, layer: int | None) -> jax.Array:
    """Excluded sinks: (pool,) for one set, (B, 1, pool) for a set per row."""
    if self.exclude.ndim == 1:
      return masks.union_mask(seed, self.exclude, pool, active, layer)
    return masks.source_mask(seed, self.exclude, pool, active, layer).any(axis=-2)[:, None, :]


  def gathered(self, backbone: int, pool: int, active: int, seed: int, segment_ids_BxT,
               max_segments: int, dtype, layer: int | None = None) -> GatheredSinks:
    """The "source" selection as per-row sink columns; segments beyond `max_segments` get none."""
    if self.mode != "source":
      raise ValueError(f"gathered sinks need mode 'source', not {self.mode!r}")
    slot_S = np.arange(1, max_segments + 1, dtype=np.int32)
    in_slot_BxSxT = segment_ids_BxT[:, None, :] == slot_S[None, :, None]
    # All tokens of a document share its source id; take it from any of them.
    slot_ids_BxS = jnp.max(jnp.where(in_slot_BxSxT, self.source_ids[:, None, :], 0), axis=-1)
    offsets_BxSxK = masks.sink_offsets(seed, slot_ids_BxS, pool, active, layer)
    _, starts_K = masks.strata(pool, active)
    sinks_BxSxK = starts_K + offsets_BxSxK
    B = segment_ids_BxT.shape[0]
    on_BxTxN = segment_ids_BxT[..., None] == np.repeat(slot_S, active)
    if self.exclude is not None:
      gone = self._gone(pool, active, seed, layer)
      sinks_BxN = sinks_BxSxK.reshape(B, -1)
      gone_BxN = (gone[sinks_BxN] if gone.ndim == 1
                  else jnp.take_along_axis(gone[:, 0, :], sinks_BxN, axis=1))
      on_BxTxN = on_BxTxN & ~gone_BxN[:, None, :]
    return GatheredSinks((backbone + sinks_BxSxK).reshape(B, -1), on_BxTxN.astype(dtype))


def _exclude(ids) -> jax.Array | None:
  if isinstance(ids, jax.Array):
    return ids.astype(jnp.uint32)
  ids = masks.check_source_ids(ids if isinstance(ids, np.ndarray) else list(ids))
  if ids.ndim not in (1, 2):
    raise ValueError(f"exclude must be ids (E,) or ids per row (B, E), got shape {ids.shape}")
  return jnp.asarray(ids, jnp.uint32) if ids.size else None


def _token_mask(ids_BxT, backbone: int, pool: int, active: int, seed: int,
                layer: int | None) -> jax.Array:
  """Boolean BxTxF mask: the backbone always on, then the token's own sinks."""
  sinks_BxTxP = masks.source_mask(seed, ids_BxT, pool, active, layer)
  return jnp.concatenate([jnp.ones(ids_BxT.shape + (backbone,), bool), sinks_BxTxP], axis=-1)
