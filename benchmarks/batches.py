"""Synthetic inputs for benchmarks: packed rows as the pipeline makes them, and articles."""

from __future__ import annotations

import numpy as np

from nullearn.data import synthetic_wikipedia as sw
from nullearn.data.records import Document

MEAN_CHARS = 4100  # lognormal, sigma 1: median 4100 * exp(-1/2) ~ 2,490 characters


def wikipedia_like(n: int, seed: int = 0) -> list[Document]:
  """`n` synthetic articles with Wikipedia's lengths (median ~2.5k characters, long tail)."""
  ids, titles, texts = sw.articles(n, mean_chars=MEAN_CHARS, seed=seed)
  return [Document(int(i), t, x) for i, t, x in zip(ids, titles, texts)]


def synthetic_batch(c, rng: np.random.Generator, segments: int | None = None):
  """Packed rows of `segments` (default `max_segments`) documents with random sources."""
  B, T, S = c.data.batch_size, c.data.seq_len, segments or c.model.max_segments
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  src = np.zeros((B, T), np.uint32)
  for b in range(B):
    cuts = np.sort(rng.choice(np.arange(1, T), S - 1, replace=False))
    for s, (lo, hi) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, T]), 1):
      seg[b, lo:hi], pos[b, lo:hi] = s, np.arange(hi - lo)
      src[b, lo:hi] = rng.integers(0, 2**32, dtype=np.uint32)
  tokens = rng.integers(4, c.model.vocab_size, (B, T + 1)).astype(np.int32)
  weights = np.ones((B, T), np.float32)
  return dict(
    inputs=tokens[:, :-1],
    targets=tokens[:, 1:],
    weights=weights,
    segment_ids=seg,
    positions=pos,
    source_ids=src,
  )
