"""The prompt router at scale: build time, peak memory, index size and query latency.

Synthetic sources: a title of 2 to 3 rare words and ~50 leading words drawn
from a Zipfian vocabulary (exponent 1.1 over 2M word types, its most frequent
ranks the English stopwords, as in real text), so posting lists have the skew
that BM25 meets on Wikipedia. Each size is built in a fresh process (peak RSS
is per build), streaming the sources as they are generated; bm25s's own
`index()` (token lists in memory) is the baseline, at the sizes it fits.
Queries are prompts of 5 to 9 common words and a random source's first two
title words, routed top-1 with 1,000 forgotten sources masked, on the
memory-mapped index (page cache warm after 20 warm-up queries); hit@1 is how
often the source whose title it names comes first. (bm25s scores every
source, then one argpartition: linear in the sources.)

  python benchmarks/router.py [--sizes 100000,400000,1600000,6400000] [--baseline_max 400000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import resource
import shutil
import tempfile
import time

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

TYPES, ZIPF, LEAD_WORDS = 2_000_000, 1.1, 50
_SYL = "ka lo mi ne ru sa te vi do fa gu hi ja ko lu ma no pe ra si to ub ve wa xo yu ze".split()


def vocabulary() -> np.ndarray:
  """TYPES distinct words, by frequency rank: stopwords first, then invented words."""
  rng = np.random.default_rng(0)
  words = list(dict.fromkeys(STOPWORDS_EN))
  seen = set(words)
  while len(words) < TYPES:
    for w in ("".join(s) for s in rng.choice(_SYL, (TYPES, 5))):
      if w not in seen:
        seen.add(w)
        words.append(w)
  return np.asarray(words[:TYPES], object)


def sources(n: int, vocab: np.ndarray, seed: int = 1):
  """(id, title + leading words) for ids 0..n-1, generated in chunks (never all at once)."""
  cdf = np.cumsum(1.0 / np.arange(1, TYPES + 1) ** ZIPF)
  cdf /= cdf[-1]
  rng = np.random.default_rng(seed)
  for lo in range(0, n, 10_000):
    m = min(10_000, n - lo)
    lengths = rng.integers(40, 61, m)
    words = vocab[np.searchsorted(cdf, rng.random(int(lengths.sum())))]
    at = np.r_[0, np.cumsum(lengths)]
    for i in range(m):
      yield lo + i, f"{title(lo + i, vocab)} {' '.join(words[at[i] : at[i + 1]])}"


def title(source_id: int, vocab: np.ndarray) -> str:
  """2 or 3 words of rank >= 1,000, a hash of the id (queries find them without the text;
  two sources share a first pair of words about once in 4e12 pairs)."""
  ranks = [_mix(source_id * 4 + k) % (TYPES - 1000) + 1000 for k in range(2 + source_id % 2)]
  return " ".join(vocab[ranks])


def _mix(x: int) -> int:
  """splitmix64's finaliser: a well-spread 64-bit hash."""
  x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
  return x ^ (x >> 31)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(n: int, out: str, baseline: bool) -> dict:
  """Runs in a fresh process: builds the index of n sources (or bm25s's own, `baseline`)."""
  from nullearn import router

  vocab = vocabulary()
  rss0 = peak_rss_mib()
  t0 = time.perf_counter()
  if baseline:
    import bm25s

    index = bm25s.BM25(method="lucene")
    index.index([router.words(t) for _, t in sources(n, vocab)], show_progress=False)
    index.save(out, show_progress=False)
  else:
    router.PromptRouter.build(sources(n, vocab), out)
  seconds = time.perf_counter() - t0
  size = sum(f.stat().st_size for f in pathlib.Path(out).iterdir())
  return {
    "seconds": seconds,
    "peak_rss_mib": peak_rss_mib(),
    "rss_before_mib": rss0,
    "index_mib": size / 2**20,
  }


def queries(n: int, out: str, count: int = 200) -> dict:
  """Top-1 routing latency on the memory-mapped index, 1,000 sources masked."""
  from nullearn import router

  vocab = vocabulary()
  index = router.PromptRouter.load(out)
  rng = np.random.default_rng(2)
  picks = rng.integers(0, n, count + 20)
  forgotten = rng.choice(n, min(1000, n // 2), replace=False)
  forgotten = forgotten[~np.isin(forgotten, picks)]
  common = vocab[:400]
  prompts = [
    " ".join([*rng.choice(common, int(rng.integers(5, 10))), *title(int(i), vocab).split()[:2]])
    for i in picks
  ]
  for p in prompts[:20]:
    index.route(p, forgotten)
  times, hits = [], 0
  for i, p in zip(picks[20:], prompts[20:]):
    t0 = time.perf_counter()
    got = index.route(p, forgotten)
    times.append(time.perf_counter() - t0)
    hits += got.source == i
  ms = 1000 * np.asarray(times)
  out = {
    "queries": count,
    "p50_ms": float(np.median(ms)),
    "p99_ms": float(np.percentile(ms, 99)),
    "mean_ms": float(ms.mean()),
    "own_source_first": hits / len(times),
  }
  return out


def _child(args):
  kind, n, out, baseline = args
  return build(n, out, baseline) if kind == "build" else queries(n, out)


def in_fresh_process(*args):
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(_child, (args,))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sizes", default="100000,400000,1600000,6400000")
  p.add_argument(
    "--baseline_max",
    type=int,
    default=400_000,
    help="largest size also built by bm25s's own index() (token lists in RAM)",
  )
  p.add_argument("--out", default="benchmarks/results/router.json")
  p.add_argument("--scratch", default=None, help="where indexes are built (default: a tempdir)")
  args = p.parse_args()
  scratch = pathlib.Path(args.scratch or tempfile.mkdtemp(prefix="router-bench-"))
  rows = []
  for n in (int(s) for s in args.sizes.split(",")):
    row = {"sources": n}
    if n <= args.baseline_max:
      row["bm25s_index"] = in_fresh_process("build", n, str(scratch / f"bm25s-{n}"), True)
      shutil.rmtree(scratch / f"bm25s-{n}")
    row["streaming"] = in_fresh_process("build", n, str(scratch / f"ours-{n}"), False)
    row["query"] = in_fresh_process("query", n, str(scratch / f"ours-{n}"), False)
    shutil.rmtree(scratch / f"ours-{n}")
    rows.append(row)
    print(json.dumps(row), flush=True)
    pathlib.Path(args.out).write_text(
      json.dumps(
        {"rows": rows, "types": TYPES, "zipf": ZIPF, "leading_words": LEAD_WORDS}, indent=1
      )
    )
  print(table(rows))
  print(f"wrote {args.out}")


def table(rows) -> str:
  lines = [
    f"{'sources':>10} {'build s':>9} {'peak MiB':>9} {'index MiB':>10} {'B/source':>9} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'hit@1':>6} {'bm25s s':>8} {'bm25s MiB':>10}"
  ]
  for r in rows:
    s, q, b = r["streaming"], r["query"], r.get("bm25s_index")
    lines.append(
      f"{r['sources']:>10,} {s['seconds']:>9.1f} {s['peak_rss_mib']:>9.0f} "
      f"{s['index_mib']:>10.1f} {s['index_mib'] * 2**20 / r['sources']:>9.0f} "
      f"{q['p50_ms']:>7.1f} {q['p99_ms']:>7.1f} {q['own_source_first']:>6.2f} "
      + (f"{b['seconds']:>8.1f} {b['peak_rss_mib']:>10.0f}" if b else f"{'':>8} {'':>10}")
    )
  return "\n".join(lines)


if __name__ == "__main__":
  main()
