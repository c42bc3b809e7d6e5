"""The published 1B NULL shape, for TPU pod slices.

32 layers, d_model 960, 15 heads in 5 KV groups of head dim 128, MLP 8192 =
500 backbone + 7692 sinks with 100 active per source, vocab 49152, RoPE base
1e5, context 1024, AdamW at 5e-4 in bf16: about 1.0B parameters.
"""

from nullearn.configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.model.update(dict(
      vocab_size=49152, d_model=960, num_layers=32, num_heads=15, num_kv_heads=5, head_dim=128,
      backbone=500, pool=7692, active=100, rope_base=100_000.0, tie_embeddings=False,
      dtype="bfloat16", param_dtype="float32", remat=True))
  c.data.update(dict(seq_len=1024, batch_size=256))
  c.train.update(dict(lr=5e-4, end_lr_ratio=0.1, warmup_steps=2000, weight_decay=0.1,
                      log_every=50, checkpoint_every=2000))
  if arg == "plain":
    c.model.backbone, c.model.pool = c.model.backbone + c.model.pool, 0
  elif arg:
    raise ValueError(f"unknown variant {arg!r} (known: plain)")
  return c
