"""Batches of evaluation rows with few compiled shapes and bounded memory.

Jitted scoring compiles once per array shape, and a batch padded to the
longest row of a whole probe set wastes memory quadratically in attention. So
rows are grouped by length into power-of-two buckets, and each bucket is cut
into batches of at most `max_tokens` tokens: memory is bounded whatever the
probes, and the number of shapes grows with the log of the longest row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """(row indices [batch_size], how many are real) per batch: one compiled shape for
  all, the last batch padded with copies of the last row."""
  for start in range(0, n, batch_size):
    yield np.minimum(np.arange(start, start + batch_size), n - 1), min(batch_size, n - start)


def bucket_length(length: int, minimum: int = 16) -> int:
  """The smallest power of two >= length (and >= minimum)."""
  return max(minimum, 1 << max(0, int(length) - 1).bit_length())


def token_batches(lengths: Sequence[int], max_tokens: int) -> Iterator[tuple[np.ndarray, int, int]]:
  """(row indices, how many are real, padded length) per batch.

  Rows of one length bucket share a batch of `max_tokens // padded length` rows
  (at least one), padded with copies of the bucket's last row; batches come
  bucket by bucket, shortest first.
  """
  lengths_N = np.asarray(lengths, np.int64)
  if max_tokens < 1:
    raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
  buckets_N = np.asarray([bucket_length(n) for n in lengths_N], np.int64)
  for width in np.unique(buckets_N):
    rows = np.flatnonzero(buckets_N == width)
    per_batch = max(1, int(max_tokens // width))
    per_batch = min(per_batch, bucket_length(len(rows), minimum=1))  # few rows: a small batch
    for idx, m in padded_batches(len(rows), per_batch):
      yield rows[idx], m, int(width)


def pad_rows(rows: Sequence[np.ndarray], width: int, dtype=np.int32) -> np.ndarray:
  """Right-pads 1-D rows with zeros to a [len(rows), width] array."""
  out = np.zeros((len(rows), width), dtype)
  for i, row in enumerate(rows):
    out[i, : len(row)] = row
  return out
