"""Bulk forgetting: what switching many sources off at once costs every other source.

Excluding n forgotten sources turns off the union of their sinks, a fraction
1 - (1 - p)^n of the pool (p = active/pool), and every retained source loses as
much of its own sinks. This trains small NULLs on the fact world that differ
only in the pool (the same active sinks per source, gathered, so each token's
compute is the same) and measures the retained sources' median Truth Ratio with
their own sinks on and n sources forgotten, as a ratio to the same probes with
nothing forgotten (one model, one probe set, per row).

  python benchmarks/bulk_forgetting.py [--sources 200] [--pools 1231,4924,19696]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from nullearn import evaluate, inference, jobs
from nullearn.configs import tiny
from nullearn.data import factworld
from nullearn.data import tokenizer as tokenizer_lib
from nullearn.switch import Switch

PAPER_P = 100 / 7692  # the 1B model: 100 active sinks of a pool of 7692


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--runs", default="runs/bulk", help="one run per pool")
  p.add_argument("--out", default="benchmarks/results/bulk_forgetting.json")
  p.add_argument("--sources", type=int, default=200, help="fact-world sources")
  p.add_argument("--active", type=int, default=16)
  p.add_argument(
    "--pools",
    default="1231,4924,19696",
    help="pools to train; the first is the paper's p = 100/7692 at --active",
  )
  p.add_argument("--forgotten", default="1,10,100", help="n forgotten at once (1%% is added)")
  p.add_argument("--epochs", type=float, default=30.0)
  p.add_argument("--max_probes", type=int, default=400, help="retained probes scored")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args()


def config_for(args, pool: int):
  c = tiny.get_config()
  c.model.update(
    dict(
      vocab_size=1024,
      d_model=64,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      backbone=16,
      pool=pool,
      active=args.active,
      sink_impl="gather",
    )
  )
  c.factworld.num_sources = args.sources
  c.train.update(dict(epochs=args.epochs, warmup_steps=20, log_every=50, checkpoint_every=1000))
  return c


def measure(run, probes, order, counts, kind_of) -> list[dict]:
  """Retained probes' Truth Ratios, own sinks on, with the first n of `order` excluded."""
  geometry = run.model_cfg.geometry
  rows = []
  base = None
  for n in [0, *counts]:
    forgotten = order[:n].tolist()
    cond = evaluate.Condition(run, lambda ids, f=forgotten: Switch.sources(ids, exclude=f))
    r = evaluate.truth_ratios(cond, probes)
    medians = {k: float(np.median(r[kind_of == k])) for k in ("unique", "shared")}
    medians["all"] = float(np.median(r))
    base = base or medians
    lost = float(np.asarray(geometry.union(forgotten)).mean()) if n else 0.0
    rows.append(
      {
        "forgotten": n,
        "pool_lost": lost,
        "pool_lost_analytic": geometry.lost_fraction(n),
        "median": medians,
        "kept": {k: medians[k] / base[k] for k in medians},
      }
    )
  return rows


def main():
  args = parse_args()
  t0 = time.time()
  pools = [int(p) for p in args.pools.split(",")]
  one_percent = max(1, round(0.01 * args.sources))
  counts = sorted({*(int(n) for n in args.forgotten.split(",")), one_percent})
  configs = {pool: config_for(args, pool) for pool in pools}
  world = factworld.generate(factworld.FactWorldConfig.from_config(configs[pools[0]]))
  runs = pathlib.Path(args.runs)
  runs.mkdir(parents=True, exist_ok=True)
  tokenizer = tokenizer_lib.for_run(
    runs, (d.text for d in world.documents), configs[pools[0]].tokenizer, 1024
  )
  jobs.run_all(
    [
      jobs.Job(f"pool{pool}", c, runs / f"pool{pool}", world.documents)
      for pool, c in configs.items()
    ],
    tokenizer,
  )
  t_train = time.time() - t0
  # Forgotten sources come first in one fixed order; the retained probes are of sources that
  # no row forgets, so every row scores the same probes.
  order = np.random.default_rng(args.seed).permutation(args.sources)
  kept_sources = set(order[max(counts) :].tolist())
  probes = [p for p in world.probes if p.source_id in kept_sources]
  idx = np.random.default_rng(args.seed).permutation(len(probes))[: args.max_probes]
  probes = [probes[i] for i in sorted(idx)]
  kind_of = np.asarray([p.kind for p in probes])
  results = []
  for pool in pools:
    run = inference.load_run(runs / f"pool{pool}")
    g = run.model_cfg.geometry
    results.append(
      {
        "pool": pool,
        "active": g.active,
        "p": g.active / g.pool,
        "budget_10pct": g.forgetting_budget(0.1),
        "rows": measure(run, probes, order, counts, kind_of),
      }
    )
  print(
    f"{args.sources} sources (1% = {one_percent}), {len(probes)} retained probes; retained "
    "median Truth Ratio (own sinks on) with n forgotten, as a share of n = 0"
  )
  print(
    f"{'pool':>6} {'p':>7} {'n':>4} {'pool lost':>9} {'analytic':>8} {'unique':>7} "
    f"{'kept':>5} {'shared':>7} {'kept':>5}"
  )
  for res in results:
    for row in res["rows"]:
      m, k = row["median"], row["kept"]
      print(
        f"{res['pool']:>6} {res['p']:>7.4f} {row['forgotten']:>4} {row['pool_lost']:>9.1%} "
        f"{row['pool_lost_analytic']:>8.1%} {m['unique']:>7.2f} {k['unique']:>5.0%} "
        f"{m['shared']:>7.2f} {k['shared']:>5.0%}"
      )
  out = {
    "sources": args.sources,
    "one_percent": one_percent,
    "epochs": args.epochs,
    "retained_probes": len(probes),
    "paper_p": PAPER_P,
    "results": results,
    "train_minutes": t_train / 60,
    "total_minutes": (time.time() - t0) / 60,
  }
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
