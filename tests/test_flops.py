"""FLOPs per token against hand counts and against XLA's own count of the compiled forward."""

import dataclasses
import types

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model
from nullearn import flops
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch

TINY = tiny_model(max_segments=4)


def test_tiny_shape_by_hand():
  # per layer: q,k,v 2*32*(4+2+2)*8 = 4096; out 2*4*8*32 = 2048; scores and sum 4*16*4*8 = 2048
  attention = 4096 + 2048 + 2048
  dense_mlp = 2 * 3 * 32 * (8 + 64)  # the whole width
  gather_mlp = 2 * 3 * 32 * (8 + 4 * 4)  # backbone + 4 documents' 4 sinks
  logits = 2 * 32 * 64
  dense = TINY
  gather = dataclasses.replace(TINY, sink_impl="gather")
  assert flops.forward_flops_per_token(dense, 16) == 2 * (attention + dense_mlp) + logits == 48128
  assert flops.forward_flops_per_token(gather, 16) == 2 * (attention + gather_mlp) + logits
  assert flops.train_flops_per_token(gather, 16) == 3 * (2 * (attention + gather_mlp) + logits)
  assert flops.dense_train_flops_per_token(gather, 16) == flops.train_flops_per_token(dense, 16)
  plain = dataclasses.replace(gather, backbone=72, pool=0)  # nothing to gather
  assert flops.train_flops_per_token(plain, 16) == flops.train_flops_per_token(dense, 16)


@pytest.mark.parametrize("impl", ["dense", "gather"])
def test_executed_forward_flops_match_xla(impl):
  """XLA's cost analysis of the compiled forward (matmuls plus elementwise work) is within
  3% of the executed count, at a shape where matmuls dominate."""
  cfg = ModelConfig(
    vocab_size=512,
    d_model=128,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=64,
    backbone=64,
    pool=1024,
    active=16,
    max_segments=4,
    sink_impl=impl,
  )
  B, T = 2, 64
  seg = np.repeat(np.arange(1, 5, dtype=np.int32), T // 4)[None].repeat(B, 0)
  pos = np.tile(np.arange(T // 4, dtype=np.int32), 4)[None].repeat(B, 0)
  graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  forward = lambda p: nnx.merge(graphdef, p)(
    np.ones((B, T), np.int32), seg, pos, Switch.sources(seg.astype(np.uint32) * 7)
  )
  cost = jax.jit(forward).lower(params).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  ours = flops.forward_flops_per_token(cfg, T) * B * T
  assert ours <= xla < 1.03 * ours


def test_chip_table():
  assert flops.chip("TPU v4").peak_flops == 275e12 and flops.chip("tpu v4").hbm_bytes == 32 * 2**30
  for kind, name in (
    ("TPU v4", "tpu v4"),
    ("TPU v5 lite", "tpu v5e"),
    ("TPU v5p", "tpu v5p"),
    ("TPU v6 lite", "tpu v6e"),
    ("NVIDIA A100-SXM4-80GB", "gpu a100"),
    ("NVIDIA H100 80GB HBM3", "gpu h100"),
    ("NVIDIA H200", "gpu h200"),
  ):
    assert flops.device_chip(types.SimpleNamespace(device_kind=kind)).name == name
  assert flops.device_chip(types.SimpleNamespace(device_kind="cpu")) is None
  with pytest.raises(ValueError, match="unknown chip 'abacus'.*tpu v5e"):
    flops.chip("abacus")
