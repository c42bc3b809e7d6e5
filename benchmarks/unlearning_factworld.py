"""The full evaluation suite on the embedded fact world.

Reuses (or trains) the demo's NULL and oracle, trains a plain transformer of the
same width on the same data, and evaluates the demo's forgotten sources with
routing by the NULL's own source embeddings: conditions, Forget Quality,
post-hoc baselines, relearning and extraction attacks.

  python benchmarks/unlearning_factworld.py [--workdir demo_out] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import time

from nullearn import demo, evaluate, inference, jobs, report
from nullearn.configs import base, tiny
from nullearn.data import corpus, factworld


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default="runs/factworld", help="the runs (trained if missing)")
  p.add_argument("--out", default="benchmarks/results/factworld")
  args = p.parse_args()
  t0 = time.time()
  config = tiny.get_config()
  workdir = pathlib.Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  world = factworld.generate(demo.world_config(config))
  forget = factworld.choose_forget_set(world, config.demo.num_forget, config.demo.forget_seed)
  tokenizer = demo.run_tokenizer(workdir, [d.text for d in world.documents], config)
  oracle_config = copy.deepcopy(config)
  oracle_config.data.exclude_sources = tuple(int(i) for i in forget)
  plain_config = base.with_variant(copy.deepcopy(config), "plain")
  jobs.run_all([jobs.Job("null", config, workdir / "null", world.documents),
                jobs.Job("oracle", oracle_config, workdir / "oracle",
                         corpus.without(world.documents, forget)),
                jobs.Job("plain", plain_config, workdir / "plain", world.documents)], tokenizer)
  t_train = time.time() - t0
  models = evaluate.Models(*(inference.load_run(workdir / n) for n in ("null", "oracle", "plain")))
  cfg = config.eval
  cfg.update(dict(unlearn_lr=1e-3, relearn_lr=1e-3, relearn_batch=16, retain_docs=200))
  result = evaluate.evaluate(models, world.documents, world.probes, forget, cfg)
  same_group = sum(world.groups[f["id"]] == world.groups[f["routed_to"]]
                   for f in result["forgotten"])
  result["benchmark"] = {"train_minutes": t_train / 60, "total_minutes": (time.time() - t0) / 60,
                         "routed_within_region": same_group / len(result["forgotten"])}
  for path in report.write(result, args.out):
    print(f"wrote {path}")
  print((pathlib.Path(args.out) / "report.md").read_text())
  print(json.dumps(result["benchmark"]))


if __name__ == "__main__":
  main()
