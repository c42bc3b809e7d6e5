"""Shared fixtures: a small config and corpus that train in seconds on a CPU."""

import os

# Eight fake CPU devices for the sharding tests; set before anything imports jax.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import pytest
from absl import flags

# Grain's multiprocess prefetch reads absl flags; tests never call app.run.
flags.FLAGS.mark_as_parsed()


def tiny_model(**overrides):
  """A two-layer model of a few thousand parameters: 8 backbone neurons, 4 of 64 sinks."""
  from nullearn.model import ModelConfig

  shape = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
  return ModelConfig(**shape, backbone=8, pool=64, active=4, **overrides)


def small_config(**model):
  from nullearn.configs import base

  c = base.get_config()
  c.model.update(
    dict(
      vocab_size=512,
      d_model=32,
      num_layers=2,
      num_heads=2,
      num_kv_heads=1,
      head_dim=16,
      backbone=8,
      pool=64,
      active=4,
      sink_impl="dense",
    )
  )
  c.model.update(model)
  c.data.update(dict(seq_len=32, batch_size=8, packing_bins=8))
  c.factworld.update(dict(num_sources=40, sources_per_group=4))
  c.train.update(
    dict(steps=12, lr=3e-3, warmup_steps=2, log_every=4, checkpoint_every=1000, progress=False)
  )
  c.mesh.update(dict(data=1, fsdp=1, tensor=1))
  c.demo.update(dict(num_forget=4, parallel=False))
  return c


@pytest.fixture(scope="session")
def world():
  from nullearn.data import factworld

  return factworld.generate(factworld.FactWorldConfig(num_sources=40, sources_per_group=4))


@pytest.fixture(scope="session")
def tokenizer(world):
  from nullearn.data.tokenizer import train_tokenizer

  return train_tokenizer([d.text for d in world.documents], 512)
