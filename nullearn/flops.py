"""Model FLOPs per token and MFU against per-chip peak dense bf16 throughput."""

from __future__ import annotations

import jax

from nullearn.model import ModelConfig

# Peak dense bf16 FLOP/s per chip, matched against `device_kind` (lower-cased).
PEAK_FLOPS = (
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("h100", 989e12),
    ("h200", 989e12),
)


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Counts the whole MLP width, as the dense masked computation does."""
  d, H, G, K = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  mlp = 2 * 3 * d * cfg.mlp_dim
  qkv = 2 * d * (H + 2 * G) * K
  out = 2 * H * K * d
  attn = 2 * 2 * seq_len * H * K / 2  # causal: half the scores are masked
  return cfg.num_layers * (mlp + qkv + out + attn) + 2 * d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  return 3 * forward_flops_per_token(cfg, seq_len)


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Per-chip peak, or None for a device without a table entry (a CPU)."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  for name, peak in PEAK_FLOPS:
    if name in kind:
      return peak
  return None
