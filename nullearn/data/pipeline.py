"""Documents -> tokens -> packed fixed-length rows with per-token source ids (Grain).

Each row carries segment ids (1, 2, ... per packed document, 0 for padding),
positions restarting at 0 in every document, and the source id of every token,
which is all the model needs to pick each token's sinks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import jax
import ml_collections
import numpy as np

from nullearn.data.corpus import Corpus, TrainingSet, training_set
from nullearn.data.records import Document
from nullearn.data.tokenizer import BOS_ID, EOS_ID, Tokenizer, split_document

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions", "source_ids")


# A document is tokenized in parts of at most this many rows' worth of characters, so
# memory is bounded by the row length, not by the longest document.
PART_ROWS = 16
# Parts tokenized per SentencePiece call (its list encode, in its own threads): the
# whole pipeline gave ~960k tokens/s against ~600k with one document a call (1024-token
# rows of Wikipedia-length synthetic articles, 2 cores).
TOKENIZE_BATCH = 64


@dataclasses.dataclass
class _Split(grain.experimental.FlatMapTransform):
  """Cuts a document's text into parts of at most `max_chars` (before tokenizing)."""

  max_chars: int
  max_fan_out: int = 1 << 20

  def flat_map(self, doc: Document):
    parts = split_document(doc.text, self.max_chars)
    return [(part, doc.source_id, i == 0, i == len(parts) - 1) for i, part in enumerate(parts)]


class _Tokenize(grain.transforms.Map):
  """A list of documents -> their BOS + pieces + EOS with per-token source ids."""

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer

  def map(self, parts: list) -> list[dict[str, np.ndarray]]:
    """(text, source id, first, last) parts -> tokens (BOS first, EOS last) and source ids."""
    out = []
    for (_, source_id, first, last), pieces in zip(
      parts, self.tokenizer.encode_batch([text for text, *_ in parts])
    ):
      tokens = np.asarray([BOS_ID] * first + pieces + [EOS_ID] * last, np.int32)
      out.append({"tokens": tokens, "source_ids": np.full(tokens.shape, source_id, np.uint32)})
    return out


@dataclasses.dataclass
class _Chunk(grain.experimental.FlatMapTransform):
  """Cuts tokenized parts into rows; each piece keeps its source id."""

  length: int
  max_fan_out: int = 1 << 20

  def flat_map(self, examples):
    return [
      {k: v[i : i + self.length] for k, v in example.items()}
      for example in examples
      for i in range(0, len(example["tokens"]), self.length)
      if len(example["tokens"]) - i > 1
    ]


def _to_model_inputs(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Shifts packed rows (..., T+1) into T inputs and next-token targets."""
  tokens, seg = row["tokens"], row["tokens_segment_ids"]
  return {
    "inputs": tokens[..., :-1],
    "targets": tokens[..., 1:],
    "weights": ((seg[..., 1:] == seg[..., :-1]) & (seg[..., 1:] > 0)).astype(np.float32),
    "segment_ids": seg[..., :-1],
    "positions": row["tokens_positions"][..., :-1],
    "source_ids": row["source_ids"][..., :-1],
  }


def training_dataset(
  docs: Sequence[Document] | grain.MapDataset,
  tokenizer: Tokenizer,
  *,
  seq_len: int,
  batch_size: int,
  seed: int,
  num_epochs: int | None = None,
  packing_bins: int = 64,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  max_segments: int | None = None,
) -> grain.IterDataset:
  """Shuffled (differently every epoch), packed and batched; deterministic in `seed`.

  `shard_index/shard_count` give each JAX process a disjoint share of documents;
  `max_segments` caps the documents per row (the gathered-sinks model needs it).
  """
  ds = docs if isinstance(docs, grain.MapDataset) else grain.MapDataset.source(docs)
  if len(ds) == 0:
    raise ValueError("the corpus has no documents")
  ds = ds[shard_index::shard_count].shuffle(seed=seed).repeat(num_epochs)
  it = grain.experimental.FlatMapIterDataset(
    ds.to_iter_dataset(), _Split(max_chars=PART_ROWS * (seq_len + 1))
  )
  it = it.batch(TOKENIZE_BATCH, batch_fn=list).map(_Tokenize(tokenizer))
  it = grain.experimental.FlatMapIterDataset(it, _Chunk(seq_len + 1))
  it = grain.experimental.FirstFitPackIterDataset(
    it,
    length_struct={"tokens": seq_len + 1, "source_ids": seq_len + 1},
    num_packing_bins=packing_bins,
    seed=seed,
    meta_features=("source_ids",),
    max_sequences_per_bin=max_segments,
  )
  it = it.batch(batch_size, drop_remainder=True).map(_to_model_inputs)  # one call per batch
  if worker_count:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def process_batch_size(config: ml_collections.ConfigDict, shard_count: int) -> int:
  """`data.batch_size` is global; each process loads its share of every batch."""
  if config.data.batch_size % shard_count:
    raise ValueError(
      f"data.batch_size={config.data.batch_size} is not divisible by the {shard_count} processes"
    )
  return config.data.batch_size // shard_count


def make_dataset(
  config: ml_collections.ConfigDict,
  data: TrainingSet | Corpus | Sequence[Document],
  tokenizer: Tokenizer,
  *,
  num_epochs: int | None = None,
  shard_index: int | None = None,
  shard_count: int | None = None,
) -> grain.IterDataset:
  """The run's input pipeline; by default this process's share.

  A corpus is first cut to its training set (`corpus.training_set`): the
  config's excluded and held-out sources never reach a batch, whoever calls.
  """
  if not isinstance(data, TrainingSet):
    data = training_set(data, config)
  gather = config.model.pool and config.model.sink_impl == "gather"
  shard_count = jax.process_count() if shard_count is None else shard_count
  return training_dataset(
    data.documents,
    tokenizer,
    seq_len=config.data.seq_len,
    batch_size=process_batch_size(config, shard_count),
    seed=config.data.shuffle_seed,
    num_epochs=num_epochs,
    packing_bins=config.data.packing_bins,
    shard_index=jax.process_index() if shard_index is None else shard_index,
    shard_count=shard_count,
    worker_count=config.data.worker_count,
    max_segments=config.model.max_segments if gather else None,
  )


def document_rows(
  tokenizer: Tokenizer, docs: Sequence[Document], seq_len: int
) -> dict[str, np.ndarray]:
  """Every document cut into rows of at most `seq_len` targets, one piece per row, unpacked.

  The unit of held-out loss, unlearning and relearning fine-tunes: each row is
  one source's text, so a row's switch is that source's.
  """
  pieces = []
  for doc in docs:
    parts = split_document(doc.text, PART_ROWS * (seq_len + 1))
    for j, part in enumerate(parts):
      tokens = tokenizer.encode_part(part, first=j == 0, last=j == len(parts) - 1)
      for i in range(0, len(tokens) - 1, seq_len):
        pieces.append((tokens[i : i + seq_len + 1], doc.source_id))
  if not pieces:
    raise ValueError("no text to cut into rows")
  n = len(pieces)
  rows = {
    "inputs": np.zeros((n, seq_len), np.int32),
    "targets": np.zeros((n, seq_len), np.int32),
    "weights": np.zeros((n, seq_len), np.float32),
    "segment_ids": np.zeros((n, seq_len), np.int32),
    "positions": np.tile(np.arange(seq_len, dtype=np.int32), (n, 1)),
    "source_ids": np.zeros((n, seq_len), np.uint32),
  }
  for r, (piece, sid) in enumerate(pieces):
    m = len(piece) - 1
    rows["inputs"][r, :m] = piece[:-1]
    rows["targets"][r, :m] = piece[1:]
    rows["weights"][r, :m] = 1.0
    rows["segment_ids"][r, :m] = 1
    rows["source_ids"][r, :] = sid
  return rows


def count_batches(dataset: grain.IterDataset) -> int:
  """Batches in a finite dataset (one pass over it, no model)."""
  return sum(1 for _ in dataset)
