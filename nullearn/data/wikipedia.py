"""Wikipedia from TFDS (ArrayRecord) as a Grain source: every article is its own source.

English Wikipedia has ~6.4M articles, so nothing here holds the corpus or all
its titles in memory: records are read on demand, and titles are found through
an index of title hashes that stays on disk (memory-mapped).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from nullearn.data.records import Document

DEFAULT_NAME = "wikipedia/20231101.en"
_READ_BATCH = 4096  # records per batched read while streaming the whole corpus
_HASHES_FILE = "title_hashes.npy"
_POSITIONS_FILE = "title_positions.npy"

DocumentSource = grain.sources.RandomAccessDataSource[Document]


class WikipediaSource:
  """Random access to a prepared TFDS Wikipedia split; record i is source i.

  Opening reads only the dataset's metadata, so every host opens its own and
  Grain slices out its share. Record indices are stable for a prepared split,
  which makes them usable as source ids.
  """

  def __init__(self, name: str = DEFAULT_NAME, *, split: str = "train",
               data_dir: str | os.PathLike[str] | None = None):
    self.name = name
    self.split = split
    self.data_dir = os.fspath(data_dir) if data_dir else tfds.core.constants.get_default_data_dir()
    self._records = _open_split(name, split, self.data_dir)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Document:
    index = self._check_index(index)
    return _document(index, self._records[index])

  def _getitems(self, indices: Sequence[int]) -> list[Document]:
    """Grain's batched-read hook: ArrayRecord reads a batch in parallel."""
    indices = [self._check_index(i) for i in indices]
    return [_document(i, r) for i, r in zip(indices, self._records.__getitems__(indices))]

  def __repr__(self) -> str:  # Grain checkpoints name their source by its repr.
    return f"WikipediaSource({self.name!r}, split={self.split!r}, data_dir={self.data_dir!r})"

  def _check_index(self, index: int) -> int:
    # Negative indices would alias records under a second source id.
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} is out of range for {len(self)} records")
    return int(index)


def _open_split(name: str, split: str, data_dir: str) -> Sequence[dict[str, bytes | str]]:
  """The split's ArrayRecord data source; never downloads or builds (that is hours)."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ValueError as e:  # unknown dataset or config (DatasetNotFoundError is a ValueError)
    raise _not_prepared(name, data_dir) from e
  if not builder.is_prepared():
    raise _not_prepared(name, data_dir)
  return builder.as_data_source(split=split)


def _not_prepared(name: str, data_dir: str) -> FileNotFoundError:
  return FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared in {data_dir} (looked for "
      f"{data_dir}/{name}/<version>/dataset_info.json). Prepare it once with "
      f"`tfds build {name} --data_dir={data_dir} --file_format=array_record`, or point "
      "data_dir (or TFDS_DATA_DIR) at a prepared copy, e.g. a gs:// bucket.")


def _document(index: int, record: dict[str, bytes | str]) -> Document:
  return Document(index, _as_str(record["title"]), _as_str(record["text"]))


def _as_str(value: bytes | str) -> str:
  # Prepared datasets decode text features to bytes; mocked ones yield str.
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class UnknownTitleError(ValueError):
  """A title that names no record of the indexed source."""


class TitleIndex:
  """Title -> source id for millions of articles, without holding the titles.

  On disk: the 64-bit hashes of all titles, sorted, and the record position of
  each. A lookup binary-searches the (memory-mapped) hashes and reads the few
  records with that hash to compare titles, so hash collisions cannot give a
  wrong id. If titles repeat, the first record wins.
  """

  def __init__(self, hashes_N: np.ndarray, positions_N: np.ndarray, source: DocumentSource):
    self._hashes_N = hashes_N
    self._positions_N = positions_N
    self._source = source

  @classmethod
  def build(cls, source: DocumentSource, path: str | os.PathLike[str]) -> TitleIndex:
    """Streams every title once, keeping only numbers (~20 bytes a title), and writes to `path`."""
    n = len(source)
    hashes_N = np.empty(n, np.uint64)
    for i, doc in enumerate(_stream(source, range(n))):
      hashes_N[i] = _title_hash(doc.source)
    order_N = np.argsort(hashes_N, kind="stable")  # equal hashes stay in record order
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / _HASHES_FILE, hashes_N[order_N])
    np.save(path / _POSITIONS_FILE, order_N.astype(np.uint32))
    return cls.open(path, source)

  @classmethod
  def open(cls, path: str | os.PathLike[str], source: DocumentSource) -> TitleIndex:
    """Maps the index built for `source` at `path`; pages load only as lookups touch them."""
    path = pathlib.Path(path)
    try:
      hashes_N = np.load(path / _HASHES_FILE, mmap_mode="r")
      positions_N = np.load(path / _POSITIONS_FILE, mmap_mode="r")
    except FileNotFoundError as e:
      raise FileNotFoundError(
          f"no title index at {path}: build it with TitleIndex.build(source, path)") from e
    if not len(hashes_N) == len(positions_N) == len(source):
      raise ValueError(f"the title index at {path} covers {len(hashes_N)} records but the "
                       f"source has {len(source)}: rebuild it for this source")
    return cls(hashes_N, positions_N, source)

  def __len__(self) -> int:
    return len(self._hashes_N)

  def lookup(self, title: str) -> int:
    """The source id of the record titled exactly `title`."""
    key = np.uint64(_title_hash(title))
    start = np.searchsorted(self._hashes_N, key, side="left")
    stop = np.searchsorted(self._hashes_N, key, side="right")
    for position in self._positions_N[start:stop]:
      doc = self._source[int(position)]
      if doc.source == title:
        return doc.source_id
    raise UnknownTitleError(f"no article is titled {title!r} (among {len(self)} indexed)")


def _title_hash(title: str) -> int:
  # Stable across processes and hosts, unlike hash(); 64 bits keep collisions rare.
  return int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")


def sample_texts(source: DocumentSource, n: int, seed: int) -> list[str]:
  """Texts of `n` distinct articles drawn uniformly (all if fewer): a tokenizer's
  training sample, since the corpus is too big and its first records are not typical."""
  if n < 1:
    raise ValueError(f"n must be at least 1, got {n}")
  picks = np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False)
  return [doc.text for doc in _stream(source, np.sort(picks).tolist())]


def _stream(source: DocumentSource, indices: Sequence[int]) -> Iterator[Document]:
  """Reads in batches, through Grain's batched-read hook where the source has one."""
  read = getattr(source, "_getitems", None) or (lambda batch: [source[i] for i in batch])
  for start in range(0, len(indices), _READ_BATCH):
    yield from read(indices[start:start + _READ_BATCH])
