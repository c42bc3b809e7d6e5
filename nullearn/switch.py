"""The switch: which sinks are on, passed to the forward pass beside the tokens.

Nothing about the selection lives in the parameters, so unlearning a source is
a change of argument (``exclude``), not of weights.

Shapes: B batch, T length, F MLP width, P pool, A active sinks per source,
M documents per packed row (gathered slots), N = M * A gathered columns, E excluded ids.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nullearn.masks import SinkGeometry, check_source_ids

Mode = Literal["source", "backbone", "expected"]


class GatheredSinks(NamedTuple):
  """Sink columns gathered per packed row: slot m holds the sinks of the row's m-th document.

  Equivalent to the dense mask (zero columns are skipped, not computed) and
  exact: a token uses only its own slot, so a sink shared by two documents of
  a row is never counted twice. Padding (segment 0) gets no sinks; it is never
  attended to nor trained on, so only its own outputs differ from the dense path.
  """

  columns_BxN: jax.Array  # int32 MLP columns
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
  source_ids: jax.Array | None = None  # uint32 BxT or Bx1, mode "source" only
  exclude: jax.Array | None = None  # uint32 (E,) or (B, E), forgotten sources

  @classmethod
  def sources(cls, source_ids, exclude=()) -> Switch:
    """Each token on its source's sinks: ids per token (B, T), per row (B, 1), or one id."""
    ids = _ids(source_ids, "source ids")
    if ids.ndim == 0:
      ids = ids.reshape(1, 1)
    elif ids.ndim != 2:
      raise ValueError(
        f"source ids must be one id, ids per row (B, 1) or per token (B, T), "
        f"got shape {tuple(ids.shape)}"
      )
    return cls("source", ids, _exclude(exclude))

  @classmethod
  def backbone(cls) -> Switch:
    return cls("backbone")

  @classmethod
  def expected(cls, exclude=()) -> Switch:
    return cls("expected", None, _exclude(exclude))

  def mlp_mask(self, geometry: SinkGeometry, dtype, layer: int = 0) -> jax.Array:
    """Multiplier of the MLP hidden units, broadcastable to (B, T, F)."""
    is_backbone_F = np.arange(geometry.width) < geometry.backbone
    if self.mode == "backbone":
      return jnp.asarray(is_backbone_F, dtype)
    if self.mode == "expected":
      on_F = jnp.asarray(np.where(is_backbone_F, 1.0, geometry.active / geometry.pool), dtype)
    elif self.mode == "source":
      sinks_BxTxP = geometry.mask(self.source_ids, layer)
      on_F = jnp.concatenate(
        [jnp.ones(self.source_ids.shape + (geometry.backbone,), bool), sinks_BxTxP], axis=-1
      )
    else:
      raise ValueError(f"unknown switch mode {self.mode!r}")
    if self.exclude is not None:
      gone = self._gone(geometry, layer)
      keep = jnp.concatenate(
        [jnp.ones(gone.shape[:-1] + (geometry.backbone,), bool), ~gone], axis=-1
      )
      on_F = jnp.where(keep, on_F, 0)
    return on_F.astype(dtype)

  def _gone(self, geometry: SinkGeometry, layer: int) -> jax.Array:
    """Excluded sinks: (P,) for one set, (B, 1, P) for a set per row."""
    if self.exclude.ndim == 1:
      return geometry.union(self.exclude, layer)
    return geometry.mask(self.exclude, layer).any(axis=-2)[:, None, :]

  def gathered(
    self, geometry: SinkGeometry, segment_ids_BxT, max_segments: int, dtype, layer: int = 0
  ) -> GatheredSinks:
    """The "source" selection as per-row sink columns for rows of at most `max_segments` docs."""
    if self.mode != "source":
      raise ValueError(f"gathered sinks need mode 'source', not {self.mode!r}")
    slot_M = np.arange(1, max_segments + 1, dtype=np.int32)
    in_slot_BxMxT = segment_ids_BxT[:, None, :] == slot_M[None, :, None]
    ids_BxT = jnp.broadcast_to(self.source_ids, segment_ids_BxT.shape)
    # All tokens of a document share its source id; take it from any of them.
    slot_ids_BxM = jnp.max(jnp.where(in_slot_BxMxT, ids_BxT[:, None, :], 0), axis=-1)
    sinks_BxMxA = geometry.sinks(slot_ids_BxM, layer)
    B = segment_ids_BxT.shape[0]
    on_BxTxN = segment_ids_BxT[..., None] == np.repeat(slot_M, geometry.active)
    if self.exclude is not None:
      gone = self._gone(geometry, layer)
      sinks_BxN = sinks_BxMxA.reshape(B, -1)
      gone_BxN = (
        gone[sinks_BxN] if gone.ndim == 1 else jnp.take_along_axis(gone[:, 0, :], sinks_BxN, axis=1)
      )
      on_BxTxN = on_BxTxN & ~gone_BxN[:, None, :]
    return GatheredSinks((geometry.backbone + sinks_BxMxA).reshape(B, -1), on_BxTxN.astype(dtype))


def _ids(ids, what: str) -> jax.Array:
  """uint32 ids; concrete values are range-checked, traced ones must be integers."""
  if isinstance(ids, jax.core.Tracer):
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"{what} must be integers, got dtype {ids.dtype}")
    return ids.astype(jnp.uint32)
  if isinstance(ids, jax.Array):
    ids = np.asarray(ids)
  return jnp.asarray(check_source_ids(ids))


def _exclude(ids) -> jax.Array | None:
  if not isinstance(ids, (jax.Array, np.ndarray)):
    ids = np.asarray(list(ids), dtype=np.int64 if not len(ids) else None)
  ids = _ids(ids, "excluded ids")
  if ids.ndim not in (1, 2):
    raise ValueError(f"exclude must be ids (E,) or ids per row (B, E), got shape {ids.shape}")
  return ids if ids.size else None
