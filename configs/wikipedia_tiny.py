"""A tiny NULL on English Wikipedia for a CPU: every article is its own source.

Reads a prepared TFDS dataset and never builds one; prepare it once with
`nullearn prepare wikipedia --out=$TFDS_DATA_DIR` (see launch/README.md).
Training runs a fixed number of steps: counting epochs would tokenize all ~6.4M
articles first.
"""

import os

from nullearn.configs import base


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"unknown variant {arg!r} (wikipedia_tiny has none)")
  c = base.get_config()
  c.data.corpus = "tfds:wikimedia_wikipedia/20231101.en"
  c.data.tfds_data_dir = os.environ.get("TFDS_DATA_DIR", "")  # "": TFDS's default directory
  c.data.update(dict(seq_len=128, batch_size=16, packing_bins=32))
  c.tokenizer.sample_docs = 20_000
  # Each token computes only its own sinks: far faster than the dense mask on a CPU.
  c.model.update(
    dict(
      vocab_size=4096,
      d_model=64,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      backbone=32,
      pool=1024,
      active=16,
      sink_impl="gather",
    )
  )
  c.train.update(dict(steps=2_000, warmup_steps=100, log_every=50, checkpoint_every=500))
  return c
