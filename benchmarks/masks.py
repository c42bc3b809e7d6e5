"""Masks for millions of sources: derivation rate, and memory that does not grow.

Derives the sinks of every source id in [0, N) for N from 1k to 6.4M, streaming
fixed-size batches, and records the process's resident memory: with no table
of sources anywhere, it stays flat as N grows. Also times masks per second for
random ids drawn from 6.4M at the 1B geometry, and checks that every sink serves
about active/pool of all sources.

  python benchmarks/masks.py [--max_sources 6400000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from nullearn.masks import SinkGeometry
from nullearn.switch import Switch

GEOMETRY = SinkGeometry(backbone=500, pool=7692, active=100)  # the 1B geometry
POOL, ACTIVE = GEOMETRY.pool, GEOMETRY.active


def rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def derivation_rate(batch: int, repeats: int = 5) -> dict:
  """Masks/s for random ids from 6.4M: sink indices, and dense 1B-width token masks."""
  rng = np.random.default_rng(0)
  offsets = jax.jit(GEOMETRY.offsets)
  dense = jax.jit(lambda ids: Switch.sources(ids).mlp_mask(GEOMETRY, jnp.bfloat16))
  out = {}
  for name, fn, shape in (
    ("sink indices", offsets, (batch,)),
    ("dense token masks (B=8, T=1024, F=8192)", dense, (8, 1024)),
  ):
    ids = jnp.asarray(rng.integers(0, 6_400_000, shape, dtype=np.uint32))
    jax.block_until_ready(fn(ids))
    t0 = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(fn(ids))
    per_sec = repeats * int(np.prod(shape)) / (time.perf_counter() - t0)
    out[name] = per_sec
  return out


def stream_all(n: int, batch: int, fn) -> dict:
  """Every source id in [0, n) once; returns sink usage counts (a pool-sized array)."""
  usage = np.zeros(POOL, np.int64)
  starts = GEOMETRY.strata_starts
  t0 = time.perf_counter()
  for lo in range(0, n, batch):
    ids = np.arange(lo, lo + batch, dtype=np.uint32)  # fixed shape: one compile
    off = np.asarray(fn(jnp.asarray(ids)))[: min(batch, n - lo)]
    np.add.at(usage, (starts + off).ravel(), 1)
  return {"seconds": time.perf_counter() - t0, "usage": usage}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--max_sources", type=int, default=6_400_000)
  p.add_argument("--batch", type=int, default=65_536)
  p.add_argument("--out", default="benchmarks/results/masks.json")
  args = p.parse_args()
  rates = derivation_rate(args.batch)
  fn = jax.jit(GEOMETRY.offsets)
  rows = []
  for n in [1_000, 10_000, 100_000, 1_000_000, args.max_sources]:
    if n > args.max_sources:
      continue
    before = rss_mib()
    res = stream_all(n, args.batch, fn)
    after = rss_mib()
    usage = res["usage"] / n
    rows.append(
      dict(
        sources=n,
        seconds=res["seconds"],
        sources_per_sec=n / res["seconds"],
        rss_before_mib=before,
        rss_after_mib=after,
        rss_growth_mib=after - before,
        usage_mean=float(usage.mean()),
        usage_min=float(usage.min()),
        usage_max=float(usage.max()),
      )
    )
  print(
    f"geometry: pool {POOL}, active {ACTIVE} (each sink should serve {ACTIVE / POOL:.4f} "
    "of sources)"
  )
  for name, v in rates.items():
    print(f"{name:42s} {v:>14,.0f} per second")
  header = (
    f"{'sources':>10}{'seconds':>9}{'sources/s':>12}{'RSS MiB':>9}{'growth':>8}"
    f"{'sink usage min/mean/max':>26}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['sources']:>10,}{r['seconds']:>9.1f}{r['sources_per_sec']:>12,.0f}"
      f"{r['rss_after_mib']:>9.0f}{r['rss_growth_mib']:>8.1f}"
      f"{r['usage_min']:>10.4f}/{r['usage_mean']:.4f}/{r['usage_max']:.4f}"
    )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        "device": jax.devices()[0].device_kind,
        "pool": POOL,
        "active": ACTIVE,
        "rates_per_sec": rates,
        "rows": rows,
      },
      indent=1,
    )
  )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
