"""Every field a run reads, with defaults; the other configs change what they must."""

import ml_collections

from nullearn.model import make_plain


def with_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """`:plain`: the same MLP width with every neuron always on, the NULL's baseline."""
  if arg == "plain":
    make_plain(c.model)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} (known: plain)")
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter initialisation

  c.model = ml_collections.ConfigDict(
    dict(
      vocab_size=1024,
      d_model=96,
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      head_dim=24,
      backbone=32,
      pool=1024,
      active=32,
      mask_seed=0,
      per_layer_masks=False,
      rope_base=10_000.0,
      norm_eps=1e-5,
      tie_embeddings=True,
      dtype="float32",
      param_dtype="float32",
      init_std=0.02,
      sink_impl="dense",
      max_segments=4,
      # What a block's backward pass recomputes: "none", "full" (keep only its inputs),
      # "dots_saveable", "dots_with_no_batch_dims_saveable" (keep the matmul outputs).
      remat="none",
      scan_layers=False,  # stacked blocks under nnx.scan: compile time flat in depth
      # Segment-causal attention kernel, all computing the same function (nullearn/attention.py):
      # "reference" (float32 TxT logits, the oracle), "xla", "cudnn" (GPU, bfloat16),
      # "splash" (TPU Pallas) or "auto" (cudnn on GPU, splash on TPU, xla on CPU).
      attention="auto",
    )
  )

  c.data = ml_collections.ConfigDict(
    dict(
      corpus="factworld",  # "factworld", a documents .jsonl, or "tfds:<name>/<config>"
      probes="",  # probes .jsonl (the fact world makes its own)
      seq_len=128,
      batch_size=32,
      shuffle_seed=0,
      packing_bins=64,
      worker_count=0,
      exclude_sources=(),  # source ids or names left out of training (an oracle run)
      tfds_data_dir="",  # TFDS corpora: where the prepared dataset lives ("": TFDS default)
      title_index="",  # TFDS corpora: a copy of the source index (default: the dataset's own)
      # "": the corpus's own sources; "clusters:K": a documents .jsonl grouped into K clusters
      # of similar text (TF-IDF + k-means, seeded by cluster_seed), one cluster a source.
      sources="",
      cluster_seed=0,
    )
  )
  c.factworld = ml_collections.ConfigDict(
    dict(
      num_sources=1000,
      sources_per_group=10,
      unique_facts=4,
      shared_facts=3,
      filler_sentences=2,
      num_distractors=4,
      seed=0,
    )
  )

  c.tokenizer = ml_collections.ConfigDict(
    dict(model_type="bpe", byte_fallback=True, max_sentences=2_000_000, sample_docs=50_000)
  )  # a TFDS corpus trains the tokenizer on this many articles

  c.train = ml_collections.ConfigDict(
    dict(
      steps=0,  # 0: as many as `epochs` passes over the corpus take
      epochs=10.0,
      lr=3e-3,
      end_lr_ratio=0.1,
      warmup_steps=100,
      weight_decay=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      grad_clip=1.0,
      log_every=100,
      checkpoint_every=500,
      keep_checkpoints=2,
      progress=True,
    )
  )

  # Sizes of the (data, fsdp, tensor) mesh; one may be -1 to fill. `num_devices`,
  # `chip` and `assumed_mfu` describe the target pod for `--dry_run` only.
  c.mesh = ml_collections.ConfigDict(
    dict(data=1, fsdp=-1, tensor=1, num_devices=8, chip="tpu v4", assumed_mfu=0.4)
  )

  c.demo = ml_collections.ConfigDict(dict(num_forget=100, forget_seed=0, parallel=True))

  # Serving (`nullearn generate`, `attribute`): prompts routed by BM25 over each surviving
  # source's title and leading words (`nullearn router` builds the index).
  c.serve = ml_collections.ConfigDict(
    dict(
      # A prompt whose best surviving source scores <= min_score (BM25; 0: no word in
      # common) is served by the fallback: "expected" (every surviving sink at
      # active/pool, as dropout inference does) or "backbone" (every sink off).
      fallback="expected",
      min_score=0.0,
      leading_words=100,  # words of each source's text indexed beside its title (the lead)
      candidates=16,
    )
  )  # attribution: routed candidate sources scored

  # `nullearn eval`: which sources to forget and how hard to attack them.
  c.eval = ml_collections.ConfigDict(
    dict(
      forget=(),
      heldout_sources=(),
      seed=0,
      retained_sources=2000,  # a lazy corpus (Wikipedia): how many retained articles eval reads
      # Source routing of a forgotten source's queries: "bm25" (its title and leading words
      # through the serving router), "backbone" (the NULL's backbone-only hidden states,
      # mean-pooled) or "titles" (sentence-transformer title embeddings: the routing extra).
      routing="bm25",
      seq_len=128,
      max_retained_probes=400,
      retain_docs=200,
      sections=("baselines", "relearning", "extraction"),
      unlearn_methods=("ga", "gd", "npo"),
      unlearn_steps=50,
      unlearn_lr=1e-4,
      unlearn_batch=16,
      npo_beta=0.1,
      relearn_steps=(1, 2, 5, 10, 20, 50),
      relearn_lr=1e-4,
      relearn_batch=8,
      extraction_prefix=32,
      extraction_continuation=32,
      extraction_samples=64,
      acr_targets=4,
      acr_target_len=16,
      gcg_steps=100,
      gcg_top_k=64,
      gcg_batch=64,
    )
  )
  # What the report calls "unlearned": the thresholds of its claims (results.claims).
  c.eval.claims = ml_collections.ConfigDict(
    dict(
      sink_on_median=2.0,  # sink on, article-specific facts: median Truth Ratio at least this
      sink_on_frac_margin=0.15,  # ... and fraction > 1 this far above the oracle's
      off_median_gap=0.3,  # switched off: median within this of the oracle's
      off_frac_gap=0.1,  # switched off: fraction > 1 within this of the oracle's
      forget_quality=0.05,  # KS p-value against the oracle at least this
      shared_keep=0.85,  # shared facts keep this share of their sink-on median
      relearn_gap=0.10,  # relearning loss within this relative gap of the oracle's
      npo_recovery=0.8,
      npo_recovery_steps=10,
    )
  )  # NPO undone: back above 80% within 10 steps
  return c
