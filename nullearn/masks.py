"""Per-source sink masks: a pure function of the sink geometry and the source id.

A source's sinks are derived on the fly from ``fold_in(key(mask_seed), source_id)``;
there is no table of sources anywhere, so millions of sources cost nothing.

The pool is cut into ``active`` contiguous strata, the first ``pool % active``
of ``pool // active + 1`` sinks and the rest of ``pool // active``, and a
source switches on exactly one sink per stratum. Compared with a uniform
``active``-subset this keeps what matters (exactly ``active`` sinks, each sink
on for a fraction ~active/pool of sources, two sources sharing ~active**2/pool
sinks on average) while costing O(active) random bits per token instead of a
permutation of the pool, and the dense mask is a broadcast compare and reshape:
no gather, no scatter, so XLA fuses it into its consumers. Every uint32 id is
valid, 0 included; no id is special.

Shapes: A active sinks per source (one per stratum), P pool size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nullearn.data.records import SOURCE_ID_MAX


def check_source_ids(ids) -> np.ndarray:
  """Validates source ids (numpy, lists or concrete jax arrays) and returns them as uint32.

  Only exact integers in [0, 2**32) are ids: a float, a bool or a negative value
  would otherwise wrap or truncate into someone else's sinks.
  """
  arr = np.asarray(ids)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
    raise ValueError(f"source ids must be integers, got dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or arr.max() > SOURCE_ID_MAX):
    bad = arr[(arr < 0) | (arr > SOURCE_ID_MAX)].ravel()[0]
    raise ValueError(f"source id {int(bad)} is out of range [0, {SOURCE_ID_MAX}]")
  return arr.astype(np.uint32)


@functools.cache
def _strata(pool: int, active: int) -> tuple[np.ndarray, np.ndarray]:
  """Size (A,) and first pool index (A,) of each stratum."""
  small, wide = divmod(pool, active)
  sizes_A = np.where(np.arange(active) < wide, small + 1, small).astype(np.uint32)
  starts_A = np.concatenate([[0], np.cumsum(sizes_A)[:-1]]).astype(np.int32)
  return sizes_A, starts_A


@dataclasses.dataclass(frozen=True)
class SinkGeometry:
  """Everything that fixes every source's sinks; two runs agree on masks iff these are equal.

  The MLP has `backbone` always-on neurons followed by a `pool` of sinks, of
  which each source switches on `active`. With `per_layer_masks` each layer
  draws its own sinks (the layer index is folded into the key); otherwise one
  mask serves every layer. `pool == 0` is the plain transformer.
  """

  backbone: int
  pool: int
  active: int
  mask_seed: int = 0
  per_layer_masks: bool = False

  def __post_init__(self):
    if self.backbone < 0 or self.pool < 0 or self.backbone + self.pool <= 0:
      raise ValueError(
        f"the MLP needs backbone >= 0, pool >= 0 and backbone + pool > 0, got "
        f"backbone={self.backbone}, pool={self.pool}"
      )
    if self.pool and not 0 < self.active <= self.pool:
      raise ValueError(f"need 0 < active <= pool, got active={self.active}, pool={self.pool}")

  @property
  def width(self) -> int:
    """The MLP's hidden width F = backbone + pool."""
    return self.backbone + self.pool

  @property
  def strata_starts(self) -> np.ndarray:
    """First pool index of each stratum, (A,)."""
    return _strata(self.pool, self.active)[1]

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> SinkGeometry:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

  def differences(self, other: SinkGeometry) -> list[str]:
    """'field: self value vs other value' for every field that differs."""
    return [
      f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
      for f in dataclasses.fields(self)
      if getattr(self, f.name) != getattr(other, f.name)
    ]

  def offsets(self, ids, layer: int = 0) -> jax.Array:
    """Offset of the chosen sink inside each stratum, shape ids.shape + (A,)."""
    sizes_A, _ = _strata(self.pool, self.active)
    root = jax.random.key(self.mask_seed)

    def one(source_id):
      key = jax.random.fold_in(root, source_id)
      if self.per_layer_masks:
        key = jax.random.fold_in(key, layer)
      bits_A = jax.random.bits(key, (self.active,), jnp.uint32)
      return (bits_A % sizes_A).astype(jnp.int32)

    ids = jnp.asarray(ids, jnp.uint32)
    flat = jax.vmap(one)(ids.reshape(-1))
    return flat.reshape(ids.shape + (self.active,))

  def sinks(self, ids, layer: int = 0) -> jax.Array:
    """Pool indices of each id's sinks, ids.shape + (A,), ascending."""
    return self.strata_starts + self.offsets(ids, layer)

  def mask(self, ids, layer: int = 0) -> jax.Array:
    """Boolean sink mask, ids.shape + (P,), exactly `active` True per id."""
    return _mask_from_offsets(self.offsets(ids, layer), self.pool)

  def union(self, ids: Sequence[int] | jax.Array, layer: int = 0) -> jax.Array:
    """Sinks used by any of `ids`, (P,): what excluding those sources removes."""
    ids = jnp.asarray(ids, jnp.uint32).reshape(-1)
    if ids.size == 0:
      return jnp.zeros((self.pool,), bool)
    return self.mask(ids, layer).any(axis=0)

  def sink_indices(self, source_id: int, layer: int = 0) -> np.ndarray:
    """Sorted pool indices of one source's sinks (a host helper for inspection)."""
    (sid,) = check_source_ids([source_id])
    return np.asarray(self.sinks(jnp.asarray(sid), layer)).astype(np.int64)

  def lost_fraction(self, num_forgotten: int) -> float:
    """Expected fraction of the pool removed by excluding `num_forgotten` random sources."""
    return 1.0 - (1.0 - self.active / self.pool) ** num_forgotten if self.pool else 0.0

  def forgetting_budget(self, fraction: float) -> int:
    """How many random sources can be excluded before `fraction` of the pool is gone.

    Every other source loses about that fraction of its own sinks too, which is
    why forgetting many sources at once erodes the rest.
    """
    if not self.pool or self.active == self.pool:
      return 0
    return int(math.log1p(-fraction) / math.log1p(-self.active / self.pool))


def _mask_from_offsets(offsets_xA: jax.Array, pool: int) -> jax.Array:
  """Boolean (..., P) mask from per-stratum offsets (..., A): two broadcast compares."""
  active = offsets_xA.shape[-1]
  small, wide = divmod(pool, active)
  parts = []
  for group, size in ((offsets_xA[..., :wide], small + 1), (offsets_xA[..., wide:], small)):
    if group.shape[-1] and size:
      hit = group[..., None] == jnp.arange(size, dtype=group.dtype)
      parts.append(hit.reshape(*group.shape[:-1], -1))
  return jnp.concatenate(parts, axis=-1)
