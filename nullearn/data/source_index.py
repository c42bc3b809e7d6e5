"""Source id -> record, and title -> source id, for millions of articles without holding them.

A Wikipedia article is identified by its page id, which survives re-preparations
and later dumps, but page ids are sparse, so a record is found through this
index. On disk: the sorted source ids with each one's record position, and the
sorted 64-bit hashes of the titles with each one's record position (20 bytes an
article). The arrays are memory-mapped: a lookup binary-searches them and touches
O(log N) pages, and a title lookup reads the few records with its hash to
compare titles, so hash collisions cannot give a wrong id.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from etils import epath

from nullearn.data.records import Document

_IDS, _ID_POSITIONS = "source_ids.npy", "source_id_positions.npy"
_HASHES, _HASH_POSITIONS = "title_hashes.npy", "title_positions.npy"
FILES = (_IDS, _ID_POSITIONS, _HASHES, _HASH_POSITIONS)
_CACHE = pathlib.Path(os.environ.get("NULLEARN_CACHE", "~/.cache/nullearn")).expanduser()
_READ_BATCH = 4096  # records per batched read while streaming a source
_ID_MAX = np.iinfo(np.uint32).max


class UnknownSourceError(ValueError):
  """A source id or title that names no record of the indexed source."""


class DuplicateSourceError(ValueError):
  """Two records carry one source id: they would share sinks and be forgotten together."""

  def __init__(self, source_id: int, positions: tuple[int, int]):
    super().__init__(f"source id {source_id} is on records {positions[0]} and {positions[1]}")
    self.source_id, self.positions = source_id, positions


def title_hash(title: str) -> int:
  # Stable across processes and hosts, unlike hash(); 64 bits keep collisions rare.
  return int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")


def write(path: str | os.PathLike[str], ids_N: np.ndarray, title_hashes_N: np.ndarray) -> None:
  """Writes the index of records whose source ids and title hashes are given in record order."""
  id_order_N = np.argsort(ids_N, kind="stable")
  sorted_ids_N = ids_N[id_order_N]
  repeats = np.flatnonzero(sorted_ids_N[1:] == sorted_ids_N[:-1])
  if repeats.size:
    k = int(repeats[0])
    raise DuplicateSourceError(int(sorted_ids_N[k]), (int(id_order_N[k]), int(id_order_N[k + 1])))
  hash_order_N = np.argsort(title_hashes_N, kind="stable")  # equal hashes stay in record order
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  np.save(path / _IDS, sorted_ids_N.astype(np.uint32))
  np.save(path / _ID_POSITIONS, id_order_N.astype(np.uint32))
  np.save(path / _HASHES, title_hashes_N[hash_order_N].astype(np.uint64))
  np.save(path / _HASH_POSITIONS, hash_order_N.astype(np.uint32))


class SourceIndex:
  """Finds the records of a random-access source of Documents by source id or by title."""

  def __init__(self, path: str | os.PathLike[str], source: Sequence[Document]):
    """Maps the index at `path` (a gs:// index is first copied to a local cache)."""
    self._path = path
    local = local_copy(epath.Path(path))
    try:
      arrays = [np.load(local / name, mmap_mode="r") for name in FILES]
    except FileNotFoundError as e:
      raise FileNotFoundError(
        f"no source index at {path}: prepare the dataset with "
        "`nullearn prepare`, or build one with `nullearn titles`"
      ) from e
    self._ids_N, self._id_positions_N, self._hashes_N, self._hash_positions_N = arrays
    if not all(len(a) == len(source) for a in arrays):
      raise ValueError(
        f"the source index at {path} covers {len(self._ids_N)} records but the "
        f"source has {len(source)}: rebuild it for this source"
      )
    self._source = source

  @classmethod
  def build(cls, source: Sequence[Document], path: str | os.PathLike[str]) -> SourceIndex:
    """Streams every record once, keeping only numbers (16 bytes a record), and writes `path`."""
    n = len(source)
    ids_N, hashes_N = np.empty(n, np.int64), np.empty(n, np.uint64)
    for i, doc in enumerate(stream(source, range(n))):
      ids_N[i], hashes_N[i] = doc.source_id, title_hash(doc.source)
    write(path, ids_N, hashes_N)
    return cls(path, source)

  def __len__(self) -> int:
    return len(self._ids_N)

  def __reduce__(self):  # pickled as its path: the maps are reopened, never copied
    return SourceIndex, (self._path, self._source)

  def positions(self, source_ids: Iterable[int]) -> list[int]:
    """The record position of each source id."""
    ids = [int(i) for i in source_ids]
    found_K = self._find(ids)
    if (found_K < 0).any():
      unknown = ids[int(np.flatnonzero(found_K < 0)[0])]
      raise UnknownSourceError(f"source id {unknown} is not in the corpus ({len(self)} sources)")
    return [int(p) for p in self._id_positions_N[found_K]]

  def __contains__(self, source_id: int) -> bool:
    return bool(self._find([source_id])[0] >= 0)

  def _find(self, ids: Sequence[int]) -> np.ndarray:
    """Each id's place in the sorted ids, or -1; queried in the index's dtype, since a
    mixed-dtype search would convert the whole mapped array."""
    ids_K = np.asarray(ids, np.int64)
    valid_K = (ids_K >= 0) & (ids_K <= _ID_MAX)
    k_K = np.searchsorted(self._ids_N, np.where(valid_K, ids_K, 0).astype(self._ids_N.dtype))
    found_K = valid_K & (k_K < len(self._ids_N))
    found_K[found_K] = self._ids_N[k_K[found_K]] == ids_K[found_K]
    return np.where(found_K, k_K, -1)

  def lookup(self, title: str) -> int:
    """The source id of the record titled exactly `title`."""
    key = np.uint64(title_hash(title))
    start = np.searchsorted(self._hashes_N, key, side="left")
    stop = np.searchsorted(self._hashes_N, key, side="right")
    positions = [int(p) for p in self._hash_positions_N[start:stop]]
    ids = [doc.source_id for doc in stream(self._source, positions) if doc.source == title]
    if not ids:
      raise UnknownSourceError(f"no article is titled {title!r} (among {len(self)} indexed)")
    if len(ids) > 1:
      raise ValueError(
        f"{len(ids)} articles are titled {title!r} (source ids "
        f"{', '.join(map(str, ids))}): name one by its id"
      )
    return ids[0]

  def sample(self, n: int, seed: int, exclude: Iterable[int] = ()) -> list[int]:
    """`n` distinct source ids drawn uniformly (all if fewer), none of `exclude`, sorted.

    Draws positions into the sorted ids, so the cost grows with n, not the corpus.
    """
    exclude = frozenset(int(e) for e in exclude)
    size = min(len(self), n + len(exclude))
    picks = np.random.default_rng(seed).choice(len(self), size=size, replace=False)
    ids = [int(i) for i in self._ids_N[picks] if int(i) not in exclude]
    return sorted(ids[:n])


def stream(source: Sequence[Document], positions: Sequence[int]) -> Iterator[Document]:
  """Reads in batches, through Grain's batched-read hook where the source has one."""
  read = getattr(source, "_getitems", None) or (lambda batch: [source[i] for i in batch])
  for start in range(0, len(positions), _READ_BATCH):
    yield from read(positions[start : start + _READ_BATCH])


def local_copy(
  path: epath.Path, names: Sequence[str] = FILES, kind: str = "source_index"
) -> pathlib.Path:
  """The directory `path` itself if local; else a copy of its files `names` in the local cache
  (maps need local files), keyed by the path and its first file's time of writing, so a
  rewritten directory gets a fresh copy."""
  if not str(path).startswith(("gs://", "s3://")):
    return pathlib.Path(path)
  key = f"{path}@{(path / names[0]).stat().mtime}"
  local = _CACHE / kind / hashlib.sha1(key.encode()).hexdigest()[:16]
  local.mkdir(parents=True, exist_ok=True)
  for name in names:
    if not (local / name).exists():
      fd, tmp = tempfile.mkstemp(dir=local)  # a whole file appears at once, or none
      os.close(fd)
      (path / name).copy(tmp, overwrite=True)
      os.replace(tmp, local / name)
  return local
