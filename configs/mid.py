"""A mid-size NULL (~70M parameters) for a single GPU or a small TPU slice.

Variants: `mid` (the NULL), `mid:plain` (every MLP neuron always on).
"""

from nullearn.configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.model.update(
    dict(
      vocab_size=16384,
      d_model=512,
      num_layers=8,
      num_heads=8,
      num_kv_heads=4,
      head_dim=64,
      backbone=256,
      pool=3840,
      active=64,
      rope_base=100_000.0,
      dtype="bfloat16",
    )
  )
  c.data.update(dict(seq_len=512, batch_size=64))
  c.train.update(dict(lr=1e-3, warmup_steps=500, log_every=50, checkpoint_every=1000))
  return base.with_variant(c, arg)
