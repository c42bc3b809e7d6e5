"""One logical-axis-rules table maps parameter and activation names onto the mesh.

Parameters carry logical names (``embed``, ``mlp``, ``heads`` ...); sharding a
model differently is a change of mesh sizes, never of model code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. A name whose mesh axes do not divide the dimension
# falls back to the longest prefix that does (5 KV heads on tensor=4: replicated).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", ("data", "fsdp")),
  ("layers", None),  # the stacked axis of scanned blocks: every device holds every layer
  ("length", None),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("vocab", "tensor"),
)


def mesh_sizes(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 size to fill `num_devices`; fixed sizes may use fewer devices."""
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh sizes must be positive, with at most one -1: got {sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices do not divide into mesh {sizes}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) > num_devices:
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} "
      f"devices, {num_devices} available"
    )
  return tuple(sizes)


def make_mesh(
  data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A (data, fsdp, tensor) mesh; one size may be -1 to take the remaining devices."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = mesh_sizes(data, fsdp, tensor, len(devices))
  return jax.make_mesh(
    sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[: math.prod(sizes)]
  )


def abstract_mesh(data: int, fsdp: int, tensor: int, num_devices: int) -> AbstractMesh:
  """The mesh of a pod that is not here: shapes and shardings only, no devices."""
  return AbstractMesh(
    mesh_sizes(data, fsdp, tensor, num_devices), MESH_AXES, axis_types=(AxisType.Auto,) * 3
  )


def logical_to_spec(
  names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules=LOGICAL_RULES
) -> P:
  """Mesh PartitionSpec for a logically named array, respecting divisibility."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name, dim in zip(names, shape):
    axes = table.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    keep = []
    for axis in axes:
      size = math.prod(mesh.shape[a] for a in keep + [axis])
      if axis in used or dim % size:
        break
      keep.append(axis)
    keep = [a for a in keep if mesh.shape[a] > 1]
    used.update(keep)
    out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
  return P(*out)


def tree_shardings(logical_tree, abstract_tree, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a pytree given a matching pytree of logical PartitionSpecs."""
  return jax.tree.map(
    lambda names, x: NamedSharding(mesh, logical_to_spec(names, x.shape, mesh, rules)),
    logical_tree,
    abstract_tree,
  )


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names under the mesh of `jax.set_mesh`; else a no-op."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over (data, fsdp): each device holds its slice of the [B, T] batch."""
  return NamedSharding(mesh, P(("data", "fsdp"), None))


def per_device_bytes(abstract_tree, shardings) -> int:
  """Bytes one device holds for a sharded pytree (the largest shard counted)."""
  total = 0
  for x, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    shard = s.shard_shape(x.shape)
    total += int(np.prod(shard)) * np.dtype(x.dtype).itemsize
  return total
