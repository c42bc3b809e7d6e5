"""Preparing Wikipedia-format dumps: seconds and bytes, on real text and at scale.

Writes parquet files in the schema of Hugging Face's wikimedia/wikipedia and
prepares them with `nullearn prepare`'s code (the same path as the real dump):

- real text, to calibrate: FOLDOC entries, and WikiText-2 articles whole and cut
  at line breaks into pieces of ~3,000 characters (Wikipedia's mean article),
  each repeated under fresh page ids to make timing stable;
- synthetic articles at scale (default 1,000,000, lognormal lengths with mean
  3,000 characters), left on disk for later measurements (`--dir`).

Baselines in the same run: reading the parquet text alone (the floor of any
conversion) and the parquet bytes of the same articles (written once, so that
repeats do not flatter parquet's cross-row compression). Throughput is counted
per CPU-second of the preparing processes (this process and its workers), which
a busy shared machine distorts less than wall time. Then extrapolates to the
6.4M articles of the 20231101.en dump from the ~3,000-character real-text row.

  python benchmarks/synthetic_wikipedia.py [--articles 1000000] [--workers 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq

from nullearn.data import prepare, wikitext
from nullearn.data.records import read_documents
from nullearn.data.synthetic_wikipedia import dump_table, write_parquet

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
WIKIPEDIA_ARTICLES = 6_400_000
PIECE_CHARS = 3000


def real_text() -> dict[str, list[tuple[str, str]]]:
  """(title, text) of real corpora, as Wikipedia-like articles."""
  articles = [
    a
    for split in ("valid", "test")
    for a in wikitext.read_articles(SHARED / "wikitext-2" / f"{split}.txt")
  ]
  pieces = []
  for title, text in articles:
    piece = ""
    for line in text.split("\n"):
      piece += line + "\n"
      if len(piece) >= PIECE_CHARS:
        pieces.append((f"{title} ({len(pieces)})", piece))
        piece = ""
  foldoc = [(d.source, d.text) for d in read_documents(SHARED / "foldoc" / "documents.jsonl")]
  return {
    "FOLDOC entries": foldoc,
    "WikiText-2, ~3,000-char pieces": pieces,
    "WikiText-2, whole articles": articles,
  }


def write_repeated(
  directory: pathlib.Path, docs: list[tuple[str, str]], min_articles: int, shards: int = 4
) -> tuple[list[pathlib.Path], float]:
  """`docs` repeated under fresh page ids until there are `min_articles`, as parquet shards;
  and the parquet bytes per article of `docs` written once."""
  directory.mkdir(parents=True, exist_ok=True)
  once = directory / "once.parquet"
  pq.write_table(dump_table(list(range(len(docs))), *map(list, zip(*docs))), once)
  once_bytes = once.stat().st_size / len(docs)
  once.unlink()
  repeats = -(-min_articles // len(docs))
  rows = [
    (1000 + k, f"{title} #{r}", text)
    for k, (r, (title, text)) in enumerate((r, d) for r in range(repeats) for d in docs)
  ]
  paths = []
  for s in range(shards):
    ids, titles, texts = zip(*rows[s::shards])
    paths.append(directory / f"train-{s:05d}-of-{shards:05d}.parquet")
    pq.write_table(dump_table(list(ids), list(titles), list(texts)), paths[-1])
  return paths, once_bytes


def cpu_seconds() -> float:
  """CPU time of this process and of its children that have exited (the workers)."""
  return sum(
    r.ru_utime + r.ru_stime
    for r in (
      resource.getrusage(resource.RUSAGE_SELF),
      resource.getrusage(resource.RUSAGE_CHILDREN),
    )
  )


def measure(
  name: str,
  files: list[pathlib.Path],
  out: pathlib.Path,
  workers: int,
  parquet_bytes_per_article: float,
) -> dict:
  start = time.perf_counter()
  chars = sum(
    len(t)
    for f in files
    for b in pq.ParquetFile(f).iter_batches(columns=["title", "text"])
    for t in b.column("text").to_pylist()
  )
  read_s = time.perf_counter() - start
  shutil.rmtree(out, ignore_errors=True)
  cpu = cpu_seconds()
  done = prepare.prepare(str(out), files, workers=workers, log=lambda _: None)
  cpu = cpu_seconds() - cpu
  n = done.articles
  return dict(
    name=name,
    articles=n,
    mean_chars=chars / n,
    workers=workers,
    parquet_read_s=read_s,
    prepare_s=done.seconds,
    prepare_cpu_s=cpu,
    prepare_vs_read=done.seconds / read_s,
    articles_per_cpu_s=n / cpu,
    array_record_bytes=int(done.num_bytes),
    bytes_per_article=done.num_bytes / n,
    bytes_per_char=done.num_bytes / chars,
    parquet_bytes_per_article=parquet_bytes_per_article,
    vs_parquet=done.num_bytes / n / parquet_bytes_per_article,
  )


def worker_memory(files: list[pathlib.Path], scratch: pathlib.Path) -> dict:
  """Resident memory of a fresh process converting `files` one after another, as a worker
  does: after its imports, and at its peak (VmHWM, which counts this process only)."""
  code = textwrap.dedent(f"""
      import pathlib
      from nullearn.data import prepare
      def vm(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
      imports = vm("VmRSS:")
      for f in {[str(f) for f in files]!r}:
        prepare._convert(pathlib.Path(f), pathlib.Path({str(scratch)!r}))
      print(imports / 1024, vm("VmHWM:") / 1024)
      """)
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  imports, peak = map(float, run.stdout.split())
  scratch.unlink()
  return dict(
    worker_rss_after_imports_mib=imports, worker_peak_rss_mib=peak, worker_files=len(files)
  )


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--articles", type=int, default=1_000_000)
  p.add_argument("--workers", type=int, default=os.cpu_count())
  p.add_argument("--dir", default="/tmp/nullearn_synthetic_wikipedia")
  p.add_argument("--out", default="benchmarks/results/synthetic_wikipedia.json")
  args = p.parse_args()
  work = pathlib.Path(args.dir)
  rows = []
  for k, (name, docs) in enumerate(real_text().items()):
    files, once = write_repeated(
      work / f"real{k}" / "parquet", docs, min_articles=3_000 if "whole" in name else 20_000
    )
    rows.append(measure(name, files, work / f"real{k}" / "tfds", 1, once))
    shutil.rmtree(work / f"real{k}")
  start = time.perf_counter()
  files = write_parquet(work / "parquet", args.articles)
  generate_s = time.perf_counter() - start
  rows.append(
    measure(
      f"synthetic, lognormal mean {PIECE_CHARS:,}",
      files,
      work / "tfds",
      args.workers,
      sum(f.stat().st_size for f in files) / args.articles,
    )
  )
  rows[-1].update(generate_s=generate_s, **worker_memory(files[:4], work / "scratch"))

  header = (
    f"{'corpus':34}{'articles':>10}{'chars':>7}{'workers':>8}{'wall s':>8}"
    f"{'vs read':>8}{'art/CPU-s':>10}{'B/article':>10}{'B/char':>7}{'vs parquet':>11}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['name']:34}{r['articles']:>10,}{r['mean_chars']:>7,.0f}{r['workers']:>8}"
      f"{r['prepare_s']:>8.1f}{r['prepare_vs_read']:>8.1f}"
      f"{r['articles_per_cpu_s']:>10,.0f}{r['bytes_per_article']:>10,.0f}"
      f"{r['bytes_per_char']:>7.3f}{r['vs_parquet']:>11.2f}"
    )
  calibration = rows[1]
  estimate = dict(
    articles=WIKIPEDIA_ARTICLES,
    array_record_gb=WIKIPEDIA_ARTICLES * calibration["bytes_per_article"] / 1e9,
    cpu_hours=WIKIPEDIA_ARTICLES / calibration["articles_per_cpu_s"] / 3600,
  )
  print(
    f"\nestimate for {WIKIPEDIA_ARTICLES:,} articles at the ~{PIECE_CHARS:,}-char real-text "
    f"row: {estimate['array_record_gb']:.1f} GB of ArrayRecord, "
    f"{estimate['cpu_hours']:.2f} CPU-hours of conversion"
  )
  synthetic = rows[-1]
  parquet_gb = synthetic["parquet_bytes_per_article"] * args.articles / 1e9
  print(
    f"synthetic: generated in {generate_s:.0f} s, {parquet_gb:.2f} GB of parquet, "
    f"{synthetic['array_record_bytes'] / 1e9:.2f} GB of ArrayRecord; a worker's memory "
    f"{synthetic['worker_rss_after_imports_mib']:.0f} MiB after imports, "
    f"{synthetic['worker_peak_rss_mib']:.0f} MiB at peak; dataset in {work / 'tfds'}"
  )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"rows": rows, "estimate": estimate}, indent=1))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
