"""A small dump in the schema of Hugging Face's wikimedia/wikipedia, and the command that
prepares it: shared by the preparation and reading tests.

Page ids are sparse and out of order (one near 2^32), titles are unicode, one
title names two articles, two titles are numbers (one of them another article's
page id), one text is empty: what the real dump may hold.
"""

import pathlib
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from nullearn.data import records
from nullearn.data.records import Document
from nullearn.data.synthetic_wikipedia import dump_table

NAME = "wikimedia_wikipedia/20231101.en"
DUPLICATE_TITLE = "Mercury"
_TITLES = [
  "Ærøskøbing",
  "東京都",
  "Zürich",
  "Ελλάδα",
  "🙂 (emoticon)",
  DUPLICATE_TITLE,
  "1984",
  "Ada Lovelace",
  "C (programming language)",
  DUPLICATE_TITLE,
  "Straße",
  "Ωmega",
  "17",
]  # and ARTICLES[45] has page id 17


def _article(k: int) -> Document:
  title = _TITLES[k] if k < len(_TITLES) else f"Article {k} — ü"
  page_id = records.SOURCE_ID_MAX - 3 if k == 4 else 10 + 7 * ((k * 37) % 64) + k % 3
  text = "" if k == 2 else f"{title} is article {k}. " * (1 + k % 6) + "Ünïcödé ✓."
  return Document(page_id, title, text)


ARTICLES = [_article(k) for k in range(64)]
SHARDS = [ARTICLES[:20], ARTICLES[20:41], ARTICLES[41:]]  # record order: shard by shard


def write_shards(directory: pathlib.Path, shards=SHARDS, **columns) -> list[pathlib.Path]:
  """One parquet file per shard, named like the dump's; `columns` replace or drop some."""
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for k, docs in enumerate(shards):
    table = dump_table(
      [d.source_id for d in docs], [d.source for d in docs], [d.text for d in docs]
    )
    for name, values in columns.items():
      table = table.drop_columns([name])
      if values is not None:
        table = table.append_column(name, pa.array(values, pa.string()))
    paths.append(directory / f"train-{k:05d}-of-{len(shards):05d}.parquet")
    pq.write_table(table, paths[-1])
  return paths


def nullearn(*args: str) -> subprocess.CompletedProcess:
  """The `nullearn` command as a user types it."""
  command = pathlib.Path(sys.executable).parent / "nullearn"
  return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=300)


def prepare(out: pathlib.Path, parquet: pathlib.Path | str, *flags: str) -> pathlib.Path:
  run = nullearn("prepare", "wikipedia", f"--out={out}", f"--parquet={parquet}", *flags)
  assert run.returncode == 0, run.stderr[-3000:]
  return out
