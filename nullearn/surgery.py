"""Weight surgery on the sink pool: removing sources' sinks, and folding a fixed switch in.

Zeroing a sink's gate and up columns and its down row gives exactly what
excluding it from the switch gives (its activation is silu(0) * 0 = 0 and its
output row is 0), for every switch, on the dense and the gathered path. So the
ledger is applied to the weights once, at load, and an export holds the same
zeros on disk: the forgotten sinks are no longer in the weights at all.

Shapes: D d_model, F MLP width (backbone + pool), P pool, A active sinks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nullearn.masks import SinkGeometry
from nullearn.model import is_stacked, stack_layers, unstack_layers

CHUNK = 65_536  # ids whose sinks are derived at once


def mlp_layers(params) -> Iterator[tuple[int, dict]]:
  """(layer index, its MLP's {'w_gate' DxF, 'w_up' DxF, 'w_down' FxD}) for every layer,
  from unrolled or stacked (scanned) blocks."""
  blocks = unstack_layers(params)["blocks"]
  for layer in sorted(blocks):
    yield layer, blocks[layer]["mlp"]


def removed_sinks(geometry: SinkGeometry, ids, layer: int) -> np.ndarray:
  """Sorted pool indices used by any of `ids` in `layer`: what excluding them switches off."""
  ids = np.asarray(ids, np.int64).reshape(-1)
  if not geometry.pool or not ids.size:
    return np.zeros((0,), np.int64)
  parts = [
    np.asarray(geometry.sinks(ids[i : i + CHUNK].astype(np.uint32), layer)).reshape(-1)
    for i in range(0, ids.size, CHUNK)
  ]
  return np.unique(np.concatenate(parts)).astype(np.int64)


def remove_sinks(params, geometry: SinkGeometry, ids) -> dict:
  """A copy of `params` with the sinks of `ids` zeroed in every layer (each layer its own sinks
  when masks are per layer), in the layout `params` hold; the other parameters are shared."""
  unstacked = unstack_layers(params)
  out = dict(unstacked, blocks=dict(unstacked["blocks"]))
  for layer, mlp in mlp_layers(params):
    cols = geometry.backbone + removed_sinks(geometry, ids, layer)
    block = dict(out["blocks"][layer])
    block["mlp"] = {
      "w_gate": mlp["w_gate"].at[:, cols].set(0),
      "w_up": mlp["w_up"].at[:, cols].set(0),
      "w_down": mlp["w_down"].at[cols, :].set(0),
    }
    out["blocks"][layer] = block
  return stack_layers(out) if is_stacked(params) else out


def fold_switch(mlp: dict, geometry: SinkGeometry, switch: str) -> dict:
  """One layer's MLP with a fixed switch folded in, as numpy arrays.

  "backbone": only the backbone columns remain (width = backbone). "expected":
  the full width, every sink's down row scaled by active/pool (sinks already
  removed stay zero). A plain MLP (pool 0) is returned as it is.
  """
  w = {k: np.asarray(v, np.float32) for k, v in mlp.items()}
  if not geometry.pool:
    return w
  if switch == "backbone":
    nb = geometry.backbone
    return {"w_gate": w["w_gate"][:, :nb], "w_up": w["w_up"][:, :nb], "w_down": w["w_down"][:nb]}
  if switch == "expected":
    scale_F = np.where(
      np.arange(geometry.width) < geometry.backbone, 1.0, geometry.active / geometry.pool
    ).astype(np.float32)
    return dict(w, w_down=w["w_down"] * scale_F[:, None])
  raise ValueError(f"--switch must be 'backbone' or 'expected', got {switch!r}")
