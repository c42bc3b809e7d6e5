"""The full evaluation suite on the embedded fact world.

Reuses (or trains) the demo's NULL and oracle, trains a plain transformer of the
same width on the same data, and evaluates the demo's forgotten sources with
routing by the NULL's own source embeddings: conditions, Forget Quality,
post-hoc baselines, relearning and extraction attacks.

  python benchmarks/unlearning_factworld.py [--workdir demo_out] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from nullearn import evaluate, inference, jobs, report
from nullearn.configs import tiny
from nullearn.data import factworld
from nullearn.data import tokenizer as tokenizer_lib


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default="runs/factworld", help="the runs (trained if missing)")
  p.add_argument("--out", default="benchmarks/results/factworld")
  args = p.parse_args()
  t0 = time.time()
  config = tiny.get_config()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  world = factworld.generate(factworld.FactWorldConfig.from_config(config))
  forget = factworld.choose_forget_set(world, config.demo.num_forget, config.demo.forget_seed)
  tokenizer = tokenizer_lib.for_run(
    workdir, (d.text for d in world.documents), config.tokenizer, config.model.vocab_size
  )
  jobs.run_all(jobs.comparison(config, workdir, world.documents, forget, plain=True), tokenizer)
  t_train = time.time() - t0
  models = evaluate.Models(*(inference.load_run(workdir / n) for n in ("null", "oracle", "plain")))
  cfg = config.eval
  cfg.update(dict(unlearn_lr=1e-3, relearn_lr=1e-3, relearn_batch=16, retain_docs=200))
  result = evaluate.evaluate(models, world.documents, world.probes, forget, cfg)
  result.benchmark = {
    "train_minutes": t_train / 60,
    "total_minutes": (time.time() - t0) / 60,
    **_routing_diagnostic(world, forget, result),
  }
  for path in report.write(result, args.out):
    print(f"wrote {path}")
  b = result.benchmark
  lines = [
    "",
    "## Routing (fact world)",
    "",
    f"{b['routed_within_region']:.0%} of the forgotten sources were routed to a source of "
    f"their own region. Median shared-fact Truth Ratio of the "
    f"{b['shared_probes_within_region']} probes routed within their region and the rest:",
    "",
    "| condition | routed within region | routed elsewhere |",
    "|---|---|---|",
  ]
  lines += [
    f"| {name} | {m['routed within region']:.2f} | {m['routed elsewhere']:.2f} |"
    for name, m in b["shared_median_by_routing"].items()
  ]
  with open(pathlib.Path(args.out) / "report.md", "a") as f:
    f.write("\n".join(lines) + "\n")
  print((pathlib.Path(args.out) / "report.md").read_text())
  print(json.dumps(result.benchmark, indent=1))


def _routing_diagnostic(world, forget, result) -> dict:
  """Shared facts live with a region: were they asked of a source of the same region?"""
  routed = {f["id"]: f["routed_to"] for f in result.forgotten}
  same = {f: world.groups[f] == world.groups[r] for f, r in routed.items()}
  forget_set = set(int(f) for f in forget)
  probes = [p for p in world.probes if p.source_id in forget_set]  # the report's order
  shared = np.asarray(result.kinds) == "shared"
  in_region = np.asarray([same[p.source_id] for p in probes])
  medians = {}
  for name, ratios in result.ratios.items():
    r = np.asarray(ratios)
    medians[name] = {
      "routed within region": float(np.median(r[shared & in_region])),
      "routed elsewhere": float(np.median(r[shared & ~in_region])),
    }
  return {
    "routed_within_region": float(np.mean(list(same.values()))),
    "shared_median_by_routing": medians,
    "shared_probes_within_region": int(np.sum(shared & in_region)),
  }


if __name__ == "__main__":
  main()
