"""The published 1B NULL shape on English Wikipedia, for a TPU v4-128 pod slice.

32 layers, d_model 960, 15 heads in 5 KV groups of head dim 128, MLP 8192 =
500 backbone + 7692 sinks with 100 active per source, vocab 49152, RoPE base
1e5, context 1024, AdamW at 5e-4 in bf16: about 1.0B parameters. Every article
of wikimedia_wikipedia/20231101.en (~6.4M, prepared by `nullearn prepare
wikipedia`) is its own source, identified by its page id; 122k steps of 256 x 1024
tokens are ~32B tokens (about 7 epochs). The 64 chips shard parameters and
optimizer state fully (FSDP) and split the batch 4 rows per chip.
"""

from nullearn.configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.model.update(
    dict(
      vocab_size=49152,
      d_model=960,
      num_layers=32,
      num_heads=15,
      num_kv_heads=5,
      head_dim=128,
      backbone=500,
      pool=7692,
      active=100,
      rope_base=100_000.0,
      tie_embeddings=False,
      dtype="bfloat16",
      param_dtype="float32",
      scan_layers=True,
      # Gathered sinks, at most 4 documents a row (benchmarks/segments_cap.py, CPU): on
      # synthetic Wikipedia-length articles (median 2.5k chars) packed into 1024 tokens,
      # caps 4, 8, 16 and no cap all fill 97.7% of the rows (few rows hold more than 4
      # articles), and the 32-layer step (extrapolated from 1 and 2 layers) takes 47.7 CPU s
      # a row with cap 4 against 122.0 with the dense mask (93.5 and 85.5 with caps 8 and
      # 16): 2.56x the dense mask's tokens/s. 900 MLP columns a token, 2.48 executed GFLOP
      # a token against the dense 6.51.
      # Matmul outputs kept for the backward pass: the dry run's XLA memory analysis puts
      # the step at 13.9 GiB of a v4 chip's 32 (2.5 GiB recomputing whole blocks, "full").
      remat="dots_saveable",
      sink_impl="gather",
      max_segments=4,
    )
  )
  c.data.update(
    dict(
      corpus="tfds:wikimedia_wikipedia/20231101.en",
      seq_len=1024,
      batch_size=256,
      packing_bins=256,
      worker_count=8,
    )
  )
  c.train.update(
    dict(
      steps=122_000,
      lr=5e-4,
      end_lr_ratio=0.1,
      warmup_steps=2000,
      weight_decay=0.1,
      log_every=50,
      checkpoint_every=2000,
      keep_checkpoints=3,
    )
  )
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, num_devices=64, chip="tpu v4", assumed_mfu=0.4))
  return base.with_variant(c, arg)
