"""Routing a prompt to the sources that survive: BM25 over each source's title and leading words.

A deployment gets a prompt, not a source id. The router scores every source by
BM25 (bm25s's Lucene variant and its index format) over the source's title and
its first `leading_words` words, and serves the prompt with the best surviving
source's sinks. Forgotten sources are masked at query time (their scores set to
-inf), so they are never returned. When no source scores above `min_score`, the
prompt is served by the fallback (`serve.fallback`: the expected mask or the
backbone only).

The index is built in two streaming passes (tokens counted per chunk of
sources and staged on disk, then scattered into the CSC matrix on disk), so
time is linear in the text and memory in the vocabulary and one chunk. It is
saved as `<workdir>/router/` in bm25s's format plus `sources.npy` (row ->
source id) and loaded memory-mapped.

Shapes: S sources (index rows), N nonzero (term, source) pairs, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN
from etils import epath

from nullearn.data import source_index
from nullearn.data.records import Document
from nullearn.switch import Switch

DIRECTORY = "router"
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern
_STOP = frozenset(STOPWORDS_EN)
_K1, _B = 1.5, 0.75  # bm25s's defaults
_CHUNK = 65_536  # sources tokenized and staged at once
_INDEX_FILES = (
  "data.csc.index.npy",
  "indices.csc.index.npy",
  "indptr.csc.index.npy",
  "vocab.index.json",
  "params.index.json",
)  # bm25s's, as `_build` writes them


def words(text: str) -> list[str]:
  """Lower-cased words of two or more characters, English stopwords removed (as bm25s)."""
  return [w for w in _TOKEN.findall(text.lower()) if w not in _STOP]


def source_text(title: str, text: str, leading_words: int) -> str:
  """What a source is indexed by: its title and the first `leading_words` words of its text."""
  return " ".join([title, *text.split(maxsplit=leading_words)[:leading_words]])


def source_texts(docs: Iterable[Document], leading_words: int) -> Iterator[tuple[int, str]]:
  """(source id, indexed text) per source, from its first document.

  A list or tuple is grouped by source (ascending ids); any other iterable (a
  lazy corpus) is read in order and must hold one document per source.
  """
  if isinstance(docs, (list, tuple)):
    first: dict[int, Document] = {}
    for d in docs:
      first.setdefault(d.source_id, d)
    docs = [first[s] for s in sorted(first)]
  for d in docs:
    yield d.source_id, source_text(d.source, d.text, leading_words)


def fallback(policy: str, exclude=()) -> Switch:
  """serve.fallback as a switch, for a prompt no surviving source matches: "expected"
  (every sink at active/pool, `exclude`'s off) or "backbone" (every sink off)."""
  if policy == "expected":
    return Switch.expected(exclude=exclude)
  if policy == "backbone":
    return Switch.backbone()
  raise ValueError(f"serve.fallback must be 'expected' or 'backbone', got {policy!r}")


@dataclasses.dataclass(frozen=True)
class Route:
  source: int | None  # None: nothing close enough, the fallback serves
  score: float


class PromptRouter:
  """A BM25 index over the sources; `top` and `route` never return an excluded source."""

  def __init__(self, bm25: bm25s.BM25, sources_S: np.ndarray, forgotten=()):
    self.bm25 = bm25
    self.sources_S = sources_S
    self.forgotten = np.asarray(forgotten, np.int64).reshape(-1)
    self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (order, ids in order)

  def without(self, ids) -> PromptRouter:
    """The same index that never returns `ids` either (a run's ledger), whatever the caller
    excludes."""
    return PromptRouter(
      self.bm25, self.sources_S, np.union1d(self.forgotten, np.asarray(ids, np.int64).reshape(-1))
    )

  def __len__(self) -> int:
    return len(self.sources_S)

  @classmethod
  def load(cls, directory: str | os.PathLike, mmap: bool = True) -> PromptRouter:
    """Loads an index (memory-mapped unless `mmap` is False); a gs:// one is copied to the
    local cache first, once."""
    remote = epath.Path(directory)
    if not (remote / "sources.npy").exists():
      raise FileNotFoundError(
        f"no router index at {directory} (build it with `nullearn router --workdir=RUN`)"
      )
    directory = source_index.local_copy(remote, ["sources.npy", *_INDEX_FILES], "router")
    bm25 = bm25s.BM25.load(str(directory), mmap=mmap, load_corpus=False)
    return cls(bm25, np.load(directory / "sources.npy", mmap_mode="r" if mmap else None))

  @classmethod
  def build(
    cls, entries: Iterable[tuple[int, str]], directory: str | os.PathLike, chunk: int = _CHUNK
  ) -> PromptRouter:
    """Indexes (source id, text) pairs, one per source, into `directory`.

    Written beside it first and swapped in whole, so a failed build leaves the
    previous index as it was. A gs:// index is built in a local temporary
    directory and uploaded, `sources.npy` last: it marks a whole index.
    """
    remote = epath.Path(directory)
    if str(remote).startswith(("gs://", "s3://")):
      with tempfile.TemporaryDirectory() as tmp:
        cls.build(entries, pathlib.Path(tmp) / remote.name, chunk)
        remote.mkdir(parents=True, exist_ok=True)
        (remote / "sources.npy").unlink(missing_ok=True)
        for name in (*_INDEX_FILES, "sources.npy"):
          epath.Path(tmp, remote.name, name).copy(remote / name, overwrite=True)
      return cls.load(remote)
    directory = pathlib.Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
      with tempfile.TemporaryDirectory(dir=partial) as staging:
        _build(entries, partial, pathlib.Path(staging), chunk)
      shutil.rmtree(directory, ignore_errors=True)
      partial.rename(directory)
    finally:
      shutil.rmtree(partial, ignore_errors=True)
    return cls.load(directory)

  @classmethod
  def in_memory(cls, entries: Iterable[tuple[int, str]]) -> PromptRouter:
    """Built in a temporary directory and held in memory (an evaluation's small corpus)."""
    with tempfile.TemporaryDirectory() as tmp:
      PromptRouter.build(entries, tmp)
      return cls.load(tmp, mmap=False)

  def scores(self, text: str) -> np.ndarray:
    """BM25 score of every source for `text`, [S] float32 (0: no word in common)."""
    vocab = self.bm25.vocab_dict
    ids = [vocab[w] for w in words(text) if w in vocab]
    if not ids:
      return np.zeros(len(self), np.float32)
    return self.bm25.get_scores_from_ids(ids)

  def top(
    self, text: str, k: int, exclude: Sequence[int] | np.ndarray = (), min_score: float = 0.0
  ) -> list[Route]:
    """The (at most) k best sources scoring above `min_score`, best first; none excluded."""
    if min_score < 0:
      raise ValueError(f"serve.min_score must be >= 0, got {min_score}")
    return _best(self._masked(text, exclude), self.sources_S, k, min_score)

  def route(
    self, text: str, exclude: Sequence[int] | np.ndarray = (), min_score: float = 0.0
  ) -> Route:
    """The best surviving source, or Route(None, 0.0) when none scores above `min_score`
    (the caller's fallback serves)."""
    got = self.top(text, 1, exclude, min_score)
    return got[0] if got else Route(None, 0.0)

  def _masked(self, text: str, exclude) -> np.ndarray:
    scores_S = np.array(self.scores(text), np.float32)
    scores_S[self._rows(exclude)] = -np.inf
    scores_S[self._rows(self.forgotten)] = -np.inf
    return scores_S

  def _rows(self, ids) -> np.ndarray:
    """Index rows of the ids that are in the index."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    if not ids.size:
      return ids
    if self._sorted is None:
      order = np.argsort(self.sources_S, kind="stable")
      self._sorted = order, np.asarray(self.sources_S)[order]
    order, sorted_S = self._sorted
    at = np.minimum(np.searchsorted(sorted_S, ids), len(sorted_S) - 1)
    return order[at[sorted_S[at] == ids]]


def _best(scores_S: np.ndarray, sources_S: np.ndarray, k: int, min_score: float) -> list[Route]:
  k = min(k, len(scores_S))
  if not k:
    return []
  best = np.argpartition(-scores_S, k - 1)[:k] if k < len(scores_S) else np.arange(k)
  best = best[np.argsort(-scores_S[best], kind="stable")]
  return [Route(int(sources_S[i]), float(scores_S[i])) for i in best if scores_S[i] > min_score]


def _build(entries, directory: pathlib.Path, staging: pathlib.Path, chunk: int) -> None:
  """Pass 1 counts (term, source) frequencies per chunk and stages them; pass 2 computes the
  Lucene BM25 weights and scatters them, term by term, into the on-disk CSC arrays."""
  vocab: dict[str, int] = {}
  df_V = np.zeros(0, np.int64)
  lengths, sources, chunks, row_C = [], [], 0, 0
  for ids, texts in _chunks(entries, chunk):
    terms = [[vocab.setdefault(w, len(vocab)) for w in words(t)] for t in texts]
    length_C = np.asarray([len(t) for t in terms], np.int64)
    flat = np.fromiter((w for t in terms for w in t), np.int64, int(length_C.sum()))
    key, tf = np.unique(
      (np.repeat(np.arange(len(texts)) + row_C, length_C) << 32) | flat, return_counts=True
    )
    term_N = (key & 0xFFFFFFFF).astype(np.int32)
    df_V = np.concatenate([df_V, np.zeros(len(vocab) - len(df_V), np.int64)])
    df_V += np.bincount(term_N, minlength=len(vocab))
    np.save(
      staging / f"{chunks}.npy",
      np.stack([term_N, (key >> 32).astype(np.int32), tf.astype(np.int32)]),
    )
    lengths.append(length_C)
    sources.append(ids)
    chunks += 1
    row_C += len(ids)
  if not chunks:
    raise ValueError("router: no sources to index")
  sources_S, length_S = np.concatenate(sources), np.concatenate(lengths)
  S = len(sources_S)
  distinct, counts = np.unique(sources_S, return_counts=True)
  if len(distinct) != S:
    raise ValueError(
      f"router: source {int(distinct[counts > 1][0])} is indexed twice (one text per source)"
    )
  idf_V = np.log1p((S - df_V + 0.5) / (df_V + 0.5)).astype(np.float32)
  norm_S = (_K1 * (1 - _B + _B * length_S / max(length_S.mean(), 1e-9))).astype(np.float32)
  indptr = np.zeros(len(vocab) + 1, np.int64)
  np.cumsum(df_V, out=indptr[1:])
  data = np.lib.format.open_memmap(
    directory / "data.csc.index.npy", "w+", np.float32, (int(indptr[-1]),)
  )
  indices = np.lib.format.open_memmap(
    directory / "indices.csc.index.npy", "w+", np.int32, (int(indptr[-1]),)
  )
  cursor_V = indptr[:-1].copy()
  for c in range(chunks):
    term_N, row_N, tf_N = np.load(staging / f"{c}.npy")
    order = np.argsort(term_N, kind="stable")  # rows stay ascending within a term
    term_N, row_N, tf_N = term_N[order], row_N[order], tf_N[order].astype(np.float32)
    starts = np.flatnonzero(np.r_[True, term_N[1:] != term_N[:-1]])
    counts = np.diff(np.r_[starts, len(term_N)])
    at = cursor_V[term_N] + np.arange(len(term_N)) - np.repeat(starts, counts)
    data[at] = idf_V[term_N] * tf_N / (tf_N + norm_S[row_N])
    indices[at] = row_N
    cursor_V[term_N[starts]] += counts  # each term once per chunk
  data.flush()
  indices.flush()
  np.save(directory / "indptr.csc.index.npy", indptr)
  np.save(directory / "sources.npy", sources_S)
  (directory / "vocab.index.json").write_text(json.dumps(vocab, ensure_ascii=False))
  (directory / "params.index.json").write_text(
    json.dumps(
      dict(
        k1=_K1,
        b=_B,
        delta=0.5,
        method="lucene",
        idf_method="lucene",
        dtype="float32",
        int_dtype="int32",
        num_docs=S,
        version=bm25s.__version__,
        backend="numpy",
      )
    )
  )


def _chunks(entries: Iterable[tuple[int, str]], size: int):
  ids, texts = [], []
  for source_id, text in entries:
    ids.append(int(source_id))
    texts.append(text)
    if len(ids) == size:
      yield np.asarray(ids, np.int64), texts
      ids, texts = [], []
  if ids:
    yield np.asarray(ids, np.int64), texts
