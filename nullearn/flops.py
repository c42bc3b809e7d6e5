"""FLOPs per token, executed and dense-equivalent, and the chips they are measured against.

"Executed" is what the configured implementation computes: the dense mask
multiplies the whole MLP width F; gathered sinks compute the backbone and the
row's `max_segments * active` gathered columns for every token (a token's own
`active` are among them; the others are computed, then zeroed). Attention
scores cover the whole T x S square, which the implementation masks rather than
skips. "Dense-equivalent" is the same model computed with the dense mask: the
yardstick that makes a gathered NULL comparable to a plain transformer of its
width. Both count matmuls only (2 FLOPs a multiply-add), forward plus a backward
of twice the forward, and no rematerialisation (the MFU convention).
"""

from __future__ import annotations

import dataclasses

import jax

from nullearn.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bytes: float
  kinds: tuple[str, ...]  # lower-cased `device_kind` substrings that name it


GiB = 2.0**30
# Vendor figures: dense (not 2:4 sparse) bf16 peak and HBM per chip (a TPU v4 chip is two
# cores sharing 32 GiB; an H200 has 141 GB).
CHIPS = (
  Chip("tpu v4", 275e12, 32 * GiB, ("tpu v4",)),
  Chip("tpu v5e", 197e12, 16 * GiB, ("tpu v5 lite", "tpu v5e")),
  Chip("tpu v5p", 459e12, 95 * GiB, ("tpu v5p", "tpu v5")),
  Chip("tpu v6e", 918e12, 32 * GiB, ("tpu v6 lite", "tpu v6e")),
  Chip("gpu a100", 312e12, 80 * GiB, ("a100",)),
  Chip("gpu h100", 989e12, 80 * GiB, ("h100",)),
  Chip("gpu h200", 989e12, 141e9, ("h200",)),
)


def chip(name: str) -> Chip:
  """The table's chip called `name` (as `mesh.chip` says it), or a ValueError listing them."""
  for c in CHIPS:
    if c.name == name.lower().strip():
      return c
  raise ValueError(f"unknown chip {name!r}; known: {[c.name for c in CHIPS]}")


def device_chip(device: jax.Device | None = None) -> Chip | None:
  """The chip of `device` (default: the first), or None for one not in the table (a CPU)."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  return next((c for c in CHIPS if any(k in kind for k in c.kinds)), None)


def peak_flops(device: jax.Device | None = None) -> float | None:
  c = device_chip(device)
  return c.peak_flops if c else None


def mlp_columns(cfg: ModelConfig, impl: str | None = None) -> int:
  """MLP hidden units each token computes under `impl` (default: the config's sink_impl)."""
  if (impl or cfg.sink_impl) == "gather" and cfg.pool:
    return cfg.backbone + cfg.max_segments * cfg.active
  return cfg.mlp_dim


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, impl: str | None = None) -> float:
  d, H, G, K = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  mlp = 2 * 3 * d * mlp_columns(cfg, impl)
  qkv = 2 * d * (H + 2 * G) * K
  out = 2 * H * K * d
  attn = 2 * 2 * seq_len * H * K  # scores and the weighted sum, over every key position
  return cfg.num_layers * (mlp + qkv + out + attn) + 2 * d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int, impl: str | None = None) -> float:
  """Executed training FLOPs per token (`impl="dense"`: the dense-equivalent count)."""
  return 3 * forward_flops_per_token(cfg, seq_len, impl)


def dense_train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  return train_flops_per_token(cfg, seq_len, "dense")
