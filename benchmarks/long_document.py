"""Peak memory of one 20 MB document through the training pipeline.

Each way runs in its own process, so peak RSS is its own:

  baseline  the process with the tokenizer loaded and the document in memory
  whole     the document tokenized in one call (`encode_document`), as the
            pipeline used to before cutting rows
  pipeline  `pipeline.training_dataset` up to its first batches: the document is
            cut into parts of `PART_ROWS` rows' worth of text before tokenizing

  python benchmarks/long_document.py [--mb 20] [--seq_len 1024]

Writes benchmarks/results/long_document.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results"
SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def document(mb: float) -> str:
  """Real English prose (WikiText-2), repeated to `mb` megabytes, as one article."""
  text = (SHARED / "wikitext-2" / "valid.txt").read_text()
  return (text * (int(mb * 2**20) // len(text) + 1))[: int(mb * 2**20)]


def tokenizer():
  from nullearn.data.tokenizer import train_tokenizer

  text = (SHARED / "wikitext-2" / "valid.txt").read_text()
  return train_tokenizer(text.splitlines()[:20_000], vocab_size=1024)


def measure(way: str, mb: float, seq_len: int) -> dict:
  """Runs one way in this process; returns peak RSS (MiB) and seconds."""
  from nullearn.data import pipeline
  from nullearn.data.records import Document

  tok, text = tokenizer(), document(mb)
  start = time.perf_counter()
  if way == "whole":
    tokens = len(tok.encode_document(text))
  elif way == "pipeline":
    ds = pipeline.training_dataset(
      [Document(source_id=1, source="long", text=text)],
      tok,
      seq_len=seq_len,
      batch_size=8,
      seed=0,
      num_epochs=1,
    )
    tokens = sum(int(b["weights"].sum()) for b, _ in zip(ds, range(4)))
  else:
    tokens = 0
  return {
    "way": way,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "seconds": time.perf_counter() - start,
    "tokens": tokens,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mb", type=float, default=20.0)
  parser.add_argument("--seq_len", type=int, default=1024)
  parser.add_argument("--way", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.way:
    print(json.dumps(measure(args.way, args.mb, args.seq_len)))
    return
  rows = []
  for way in ("baseline", "pipeline", "whole"):
    out = subprocess.run(
      [sys.executable, __file__, f"--way={way}", f"--mb={args.mb}", f"--seq_len={args.seq_len}"],
      capture_output=True,
      text=True,
    )
    rows.append(
      json.loads(out.stdout)
      if out.returncode == 0
      else {"way": way, "error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    )
  base = rows[0]["peak_mib"]
  print(f"one {args.mb:g} MB document, seq_len {args.seq_len}")
  print(f"{'way':10} {'peak MiB':>9} {'over baseline':>14} {'seconds':>8}")
  for r in rows:
    if "error" in r:
      print(f"{r['way']:10} {r['error']}")
    else:
      print(f"{r['way']:10} {r['peak_mib']:9.0f} {r['peak_mib'] - base:14.0f} {r['seconds']:8.1f}")
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "long_document.json").write_text(
    json.dumps({"mb": args.mb, "seq_len": args.seq_len, "rows": rows}, indent=2) + "\n"
  )


if __name__ == "__main__":
  main()
