"""Per-source sink masks: a pure function of (mask seed, source id, pool, active).

A source's sinks are derived on the fly from ``fold_in(key(seed), source_id)``;
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
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SOURCE_ID_MAX = 2**32 - 1


def check_source_ids(ids) -> np.ndarray:
  """Validates host-side source ids and returns them as uint32."""
  arr = np.asarray(ids)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
    raise ValueError(f"source ids must be integers, got dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or arr.max() > SOURCE_ID_MAX):
    bad = arr[(arr < 0) | (arr > SOURCE_ID_MAX)].ravel()[0]
    raise ValueError(f"source id {int(bad)} is out of range [0, {SOURCE_ID_MAX}]")
  return arr.astype(np.uint32)


@functools.lru_cache(maxsize=None)
def strata(pool: int, active: int) -> tuple[np.ndarray, np.ndarray]:
  """Size (active,) and first pool index (active,) of each stratum."""
  if not 0 < active <= pool:
    raise ValueError(f"need 0 < active <= pool, got active={active}, pool={pool}")
  small, wide = divmod(pool, active)
  sizes_K = np.where(np.arange(active) < wide, small + 1, small).astype(np.uint32)
  starts_K = np.concatenate([[0], np.cumsum(sizes_K)[:-1]]).astype(np.int32)
  return sizes_K, starts_K


def sink_offsets(seed: int, ids: jax.Array, pool: int, active: int,
                 layer: int | None = None) -> jax.Array:
  """Offset of the chosen sink inside each stratum, shape ids.shape + (active,)."""
  sizes_K, _ = strata(pool, active)
  root = jax.random.key(seed)

  def one(source_id):
    key = jax.random.fold_in(root, source_id)
    if layer is not None:
      key = jax.random.fold_in(key, layer)
    bits = jax.random.bits(key, (active,), jnp.uint32)
    return (bits % sizes_K).astype(jnp.int32)

  ids = jnp.asarray(ids, jnp.uint32)
  flat = jax.vmap(one)(ids.reshape(-1))
  return flat.reshape(ids.shape + (active,))


def mask_from_offsets(offsets: jax.Array, pool: int) -> jax.Array:
  """Boolean (..., pool) mask from per-stratum offsets (..., active)."""
  active = offsets.shape[-1]
  small, wide = divmod(pool, active)
  parts = []
  for group, size in ((offsets[..., :wide], small + 1), (offsets[..., wide:], small)):
    if group.shape[-1] and size:
      hit = group[..., None] == jnp.arange(size, dtype=group.dtype)
      parts.append(hit.reshape(*group.shape[:-1], -1))
  return jnp.concatenate(parts, axis=-1)


def source_mask(seed: int, ids: jax.Array, pool: int, active: int,
                layer: int | None = None) -> jax.Array:
  """Boolean sink mask, shape ids.shape + (pool,), exactly `active` True per id."""
  return mask_from_offsets(sink_offsets(seed, ids, pool, active, layer), pool)


def sink_indices(seed: int, source_id: int, pool: int, active: int,
                 layer: int | None = None) -> np.ndarray:
  """Sorted pool indices of one source's sinks (host helper for inspection)."""
  (sid,) = check_source_ids([source_id])
  _, starts_K = strata(pool, active)
  offsets = np.asarray(sink_offsets(seed, jnp.asarray(sid), pool, active, layer))
  return (starts_K + offsets).astype(np.int64)


def union_mask(seed: int, ids: Sequence[int] | jax.Array, pool: int, active: int,
               layer: int | None = None) -> jax.Array:
  """Sinks used by any of `ids`, shape (pool,): what excluding those sources removes."""
  ids = jnp.asarray(ids, jnp.uint32).reshape(-1)
  if ids.size == 0:
    return jnp.zeros((pool,), bool)
  return source_mask(seed, ids, pool, active, layer).any(axis=0)
