"""Wikipedia from a prepared TFDS dataset (ArrayRecord) as a Grain source: each article a source.

English Wikipedia has ~6.4M articles, so nothing here holds the corpus or all
its titles in memory: records are read on demand, and an article is found by its
page id or title through the dataset's memory-mapped source index.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from nullearn.data.records import Document
from nullearn.data.source_index import SourceIndex, stream

DEFAULT_NAME = "wikimedia_wikipedia/20231101.en"
INDEX_DIR = "source_index"  # inside the dataset's version directory
MANIFEST = "prepared_from.json"  # the files a dataset was prepared from, beside its shards

DocumentSource = grain.sources.RandomAccessDataSource[Document]


class WikipediaSource:
  """Random access to a prepared split; record i is an article, its page id its source id.

  Opening reads only the dataset's metadata, so every host opens its own and
  Grain slices out its share. The page id, unlike a record's position, is the
  same in every preparation and every later dump, so an article keeps its sinks.
  """

  def __init__(
    self,
    name: str = DEFAULT_NAME,
    *,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    index: str | os.PathLike[str] | None = None,
  ):
    """`index`: a copy of the source index to use instead of the dataset's own."""
    self.name = name
    self.split = split
    self.data_dir = os.fspath(data_dir) if data_dir else tfds.core.constants.get_default_data_dir()
    builder = _builder(name, self.data_dir)
    self._records = builder.as_data_source(split=split)
    self._version_dir = os.fspath(builder.data_path)
    self.index_path = os.fspath(index) if index else os.path.join(self._version_dir, INDEX_DIR)
    self._index: SourceIndex | None = None

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Document:
    return _document(self._records[self._check_index(index)])

  def _getitems(self, indices: Sequence[int]) -> list[Document]:
    """Grain's batched-read hook: ArrayRecord reads a batch in parallel."""
    indices = [self._check_index(i) for i in indices]
    return [_document(r) for r in self._records.__getitems__(indices)]

  @property
  def index(self) -> SourceIndex:
    """Page id -> record and title -> page id; mapped on first use."""
    if self._index is None:
      self._index = SourceIndex(self.index_path, self)
    return self._index

  def by_ids(self, source_ids: Sequence[int]) -> list[Document]:
    """The articles with these page ids, reading only their records."""
    docs = list(stream(self, self.index.positions(source_ids)))
    for wanted, doc in zip(source_ids, docs):
      if doc.source_id != wanted:  # an index built for another preparation
        raise ValueError(
          f"the source index at {self.index_path} does not match the dataset: "
          f"page id {wanted} points at page {doc.source_id}; rebuild the index"
        )
    return docs

  @property
  def fingerprint(self) -> str:
    """Names the text: dataset, version, records and a hash of the files it was prepared
    from, so a run resumed, or an oracle compared, on other data is caught."""
    manifest = epath.Path(self._version_dir) / MANIFEST
    made_from = (
      hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.exists() else "unknown"
    )
    return f"{self.name}:{epath.Path(self._version_dir).name}:{len(self)}:{made_from}"

  def __getstate__(self):  # Grain workers reopen the index's maps rather than copy them.
    return {**self.__dict__, "_index": None}

  def __repr__(self) -> str:  # Grain checkpoints name their source by its repr.
    return f"WikipediaSource({self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"

  def _check_index(self, index: int) -> int:
    # Negative indices would alias records under a second position.
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} is out of range for {len(self)} records")
    return int(index)


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared dataset's builder; never downloads or builds (that is `nullearn prepare`)."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ValueError as e:  # unknown dataset or config (DatasetNotFoundError is a ValueError)
    raise _not_prepared(name, data_dir) from e
  if not builder.is_prepared():
    raise _not_prepared(name, data_dir)
  return builder


def _not_prepared(name: str, data_dir: str) -> FileNotFoundError:
  if name != DEFAULT_NAME:
    how = "Prepare it first"
  elif "://" in data_dir:
    how = (
      f"Prepare it once with `nullearn prepare wikipedia --out=DIR`, copy "
      f"DIR/{name.split('/')[0]} to {data_dir}/ (launch/README.md)"
    )
  else:
    how = f"Prepare it once with `nullearn prepare wikipedia --out={data_dir}`"
  return FileNotFoundError(
    f"dataset {name!r} is not prepared in {data_dir} (looked for "
    f"{data_dir}/{name}/<version>/dataset_info.json). {how}, or point data_dir "
    "(or TFDS_DATA_DIR) at a prepared copy, e.g. a gs:// bucket."
  )


def _document(record: dict[str, int | bytes]) -> Document:
  return Document(
    int(record["id"]), record["title"].decode("utf-8"), record["text"].decode("utf-8")
  )


def sample_texts(source: DocumentSource, n: int, seed: int) -> list[str]:
  """Texts of `n` distinct articles drawn uniformly (all if fewer): a tokenizer's
  training sample, since the corpus is too big and its first records are not typical."""
  if n < 1:
    raise ValueError(f"n must be at least 1, got {n}")
  picks = np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False)
  return [doc.text for doc in stream(source, np.sort(picks).tolist())]
