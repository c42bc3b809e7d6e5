"""`nullearn prepare wikipedia`: Wikipedia's parquet shards -> a TFDS dataset of ArrayRecord files.

The input is Hugging Face's `wikimedia/wikipedia` dump (columns id, url, title,
text; `id` the page id), downloaded or given. One process converts one parquet
shard into one ArrayRecord shard; TFDS then writes the metadata that lets
`tfds.data_source` and Grain open the dataset lazily, local or gs://, without
TensorFlow. Records keep the shards' order (by file name) and each shard's row
order, so the same files give the same dataset whatever the number of workers,
and every record carries its page id, the article's source id. The source index
(page id and title -> record) is written beside the shards.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import example_serializer

from nullearn.data import download, source_index, wikipedia
from nullearn.data.records import Document

NAME, CONFIG = wikipedia.DEFAULT_NAME.split("/")
VERSION = "1.0.0"
NUM_SHARDS = 41  # of the 20231101.en dump
PARQUET_URL = f"https://huggingface.co/datasets/wikimedia/wikipedia/resolve/main/{CONFIG}"
COLUMNS = ("id", "title", "text")
FEATURES = tfds.features.FeaturesDict(
  {
    "id": tfds.features.Scalar(np.int64),
    "title": tfds.features.Text(),
    "text": tfds.features.Text(),
  }
)
_WRITER_OPTIONS = "group_size:1,zstd:3"  # a chunk per record, so a random read reads one
_BATCH = 1024  # parquet rows per read
_DESCRIPTION = (
  f"English Wikipedia, dump {CONFIG}, from the parquet files of the Hugging Face "
  "dataset wikimedia/wikipedia (CC BY-SA 4.0 and GFDL text). One record per "
  "article: id (the page id), title, text; in the files' order."
)


class PrepareError(ValueError):
  """A bad input or output; the message names the file (and row)."""


@dataclasses.dataclass(frozen=True)
class Prepared:
  path: pathlib.Path  # the dataset's version directory
  articles: int
  num_bytes: int  # of the ArrayRecord shards
  seconds: float
  reused: bool = False  # already prepared from the same files


@dataclasses.dataclass(frozen=True)
class _Shard:
  rows: int
  num_bytes: int
  ids_N: np.ndarray
  title_hashes_N: np.ndarray


def prepare_wikipedia(
  out: str,
  *,
  parquet: str | None = None,
  parquet_url: str = PARQUET_URL,
  workers: int | None = None,
  log: Callable[[str], None] = print,
) -> Prepared:
  """Prepares the dump in the TFDS data directory `out`, from `parquet` (a directory of
  .parquet files or a glob) or else from the shards downloaded into `out`/downloads."""
  workers = workers or os.cpu_count() or 1
  _local(out)  # before any download
  if parquet:
    files = find_parquet(parquet)
  else:
    urls = [
      f"{parquet_url.rstrip('/')}/train-{i:05d}-of-{NUM_SHARDS:05d}.parquet"
      for i in range(NUM_SHARDS)
    ]
    try:
      files = download.fetch_all(
        urls, _local(out) / "downloads" / NAME / CONFIG, parallel=min(workers, 8), log=log
      )
    except download.DownloadError as e:
      raise PrepareError(str(e)) from e
  return prepare(out, files, workers=workers, log=log)


def find_parquet(spec: str) -> list[pathlib.Path]:
  """The files a --parquet value names: a directory's *.parquet, or a glob."""
  path = pathlib.Path(spec).expanduser()
  found = path.glob("*.parquet") if path.is_dir() else glob.glob(os.path.expanduser(spec))
  files = sorted(pathlib.Path(f) for f in found)
  if not files:
    raise PrepareError(f"--parquet={spec}: no parquet files there")
  return files


def prepare(
  out: str, files: Sequence[pathlib.Path], *, workers: int = 1, log: Callable[[str], None] = print
) -> Prepared:
  """Converts parquet `files` into the dataset NAME/CONFIG in the data directory `out`."""
  start = time.perf_counter()
  files = sorted((pathlib.Path(f) for f in files), key=lambda f: f.name)
  names = [f.name for f in files]
  if len(set(names)) < len(names):
    raise PrepareError(f"two input files share a name, so their order is ambiguous: {names}")
  inputs = [{"name": f.name, "bytes": f.stat().st_size} for f in files]
  target = _local(out) / NAME / CONFIG / VERSION
  if target.exists():
    return _reuse(target, inputs)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{VERSION}.incomplete-"))
  try:
    shards = _convert_all(files, tmp, workers, log)
    _write_index(tmp, files, shards)
    split = tfds.core.SplitInfo(
      name="train",
      shard_lengths=[s.rows for s in shards],
      num_bytes=sum(s.num_bytes for s in shards),
    )
    tfds.folder_dataset.write_metadata(
      data_dir=tmp,
      features=FEATURES,
      split_infos=[split],
      version=VERSION,
      check_data=False,  # reading it back would need TensorFlow
      description=_DESCRIPTION,
      homepage="https://huggingface.co/datasets/wikimedia/wikipedia",
    )
    articles = sum(s.rows for s in shards)
    manifest = {"inputs": inputs, "articles": articles}
    (tmp / wikipedia.MANIFEST).write_text(json.dumps(manifest, indent=1))
    tmp.chmod(0o755)  # mkdtemp makes it private
    os.replace(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return Prepared(target, articles, int(split.num_bytes), time.perf_counter() - start)


def _local(out: str) -> pathlib.Path:
  if "://" in out:
    raise PrepareError(
      f"--out={out}: prepare into a local directory (ArrayRecord writes "
      "local files), then copy it: gcloud storage rsync -r DIR gs://..."
    )
  return pathlib.Path(out).expanduser()


def _reuse(target: pathlib.Path, inputs: list[dict]) -> Prepared:
  """The dataset already at `target` if it was prepared from the same files; else an error."""
  try:
    manifest = json.loads((target / wikipedia.MANIFEST).read_text())
  except (OSError, ValueError):
    raise PrepareError(
      f"{target} already holds a dataset not prepared by `nullearn prepare`: "
      "remove it or choose another --out"
    ) from None
  if manifest["inputs"] != inputs:
    raise PrepareError(
      f"{target} already holds a dataset prepared from other files "
      f"({len(manifest['inputs'])} files, {manifest['articles']} articles): "
      "remove it or choose another --out"
    )
  num_bytes = sum(f.stat().st_size for f in target.glob(f"{NAME}-train.array_record-*"))
  return Prepared(target, manifest["articles"], num_bytes, 0.0, reused=True)


def _convert_all(
  files: Sequence[pathlib.Path], tmp: pathlib.Path, workers: int, log: Callable[[str], None]
) -> list[_Shard]:
  """Each file to its own shard, `workers` processes at a time; results in file order."""
  jobs = [
    (f, tmp / f"{NAME}-train.array_record-{i:05d}-of-{len(files):05d}") for i, f in enumerate(files)
  ]
  if workers == 1:
    return [_logged(log, i, len(jobs), _convert(*job)) for i, job in enumerate(jobs, start=1)]
  # Spawned, not forked: the parent's Arrow and ArrayRecord thread pools must not be copied.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
    futures = {pool.submit(_convert, *job): k for k, job in enumerate(jobs)}
    shards: list[_Shard | None] = [None] * len(jobs)
    try:
      for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
        shards[futures[future]] = _logged(log, done, len(jobs), future.result())
    except BaseException:
      pool.shutdown(cancel_futures=True)
      raise
  return shards


def _logged(log: Callable[[str], None], done: int, total: int, shard: _Shard) -> _Shard:
  log(f"converted {shard.rows:,} articles ({done}/{total} files)")
  return shard


def _convert(src: pathlib.Path, dst: pathlib.Path) -> _Shard:
  """One parquet file -> one ArrayRecord shard, with the page id and title hash of each row."""
  try:
    table = pq.ParquetFile(src)
  except (OSError, pa.ArrowException) as e:
    raise PrepareError(f"{src}: not a readable parquet file ({_first_line(e)})") from None
  missing = [c for c in COLUMNS if c not in table.schema_arrow.names]
  if missing:
    raise PrepareError(
      f"{src}: missing column(s) {', '.join(missing)} "
      f"(it has {', '.join(table.schema_arrow.names)})"
    )
  serializer = example_serializer.ExampleSerializer(FEATURES.get_serialized_info())
  writer = array_record_module.ArrayRecordWriter(os.fspath(dst), _WRITER_OPTIONS)
  ids, hashes = [], []
  try:
    for batch in table.iter_batches(batch_size=_BATCH, columns=list(COLUMNS)):
      for row in zip(*(batch.column(c).to_pylist() for c in COLUMNS)):
        doc = _document(row, f"{src}: row {len(ids)}")
        writer.write(
          serializer.serialize_example(
            FEATURES.encode_example({"id": doc.source_id, "title": doc.source, "text": doc.text})
          )
        )
        ids.append(doc.source_id)
        hashes.append(source_index.title_hash(doc.source))
  except (OSError, pa.ArrowException) as e:
    raise PrepareError(f"{src}: unreadable after row {len(ids)} ({_first_line(e)})") from None
  finally:
    writer.close()
  return _Shard(
    len(ids), dst.stat().st_size, np.asarray(ids, np.int64), np.asarray(hashes, np.uint64)
  )


def _document(row: tuple[object, object, object], where: str) -> Document:
  page_id, title, text = row
  if not isinstance(title, str) or not title:
    raise PrepareError(f"{where}: the title must be a non-empty string, got {title!r}")
  if not isinstance(text, str):
    raise PrepareError(f"{where}: the text must be a string, got {type(text).__name__}")
  if isinstance(page_id, str) and page_id.isascii() and page_id.isdigit():
    page_id = int(page_id)  # the dump stores page ids as decimal strings
  try:
    return Document(page_id, title, text)
  except ValueError as e:
    raise PrepareError(f"{where}: id {row[0]!r} is not a page id ({e})") from None


def _write_index(tmp: pathlib.Path, files: Sequence[pathlib.Path], shards: Sequence[_Shard]):
  try:
    source_index.write(
      tmp / wikipedia.INDEX_DIR,
      np.concatenate([s.ids_N for s in shards]),
      np.concatenate([s.title_hashes_N for s in shards]),
    )
  except source_index.DuplicateSourceError as e:
    starts = np.cumsum([0] + [s.rows for s in shards])
    where = []
    for position in e.positions:
      k = int(np.searchsorted(starts, position, side="right")) - 1
      where.append(f"{files[k]} row {position - starts[k]}")
    raise PrepareError(f"page id {e.source_id} is on two rows: {' and '.join(where)}") from None


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0]
