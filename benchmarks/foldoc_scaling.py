"""How unlearning on real text scales: Forget Quality and the off-minus-oracle gap against
the number of training sources, at equal epochs, for two backbone sizes.

Each point trains a NULL and an oracle without its forgotten entries (the
corpus, forget set and probes of benchmarks/unlearning_foldoc.py at that size)
and scores only the forgotten entries' probes: no baselines or attacks.

  python benchmarks/foldoc_scaling.py [--entries 120,500,2000] [--backbones 8,32]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import unlearning_foldoc as foldoc  # this folder is on sys.path when run as a script

from nullearn import evaluate, inference, jobs
from nullearn.data import tokenizer as tokenizer_lib
from nullearn.results import Cond, FactSet


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--runs", default="runs/foldoc_scaling")
  p.add_argument("--out", default="benchmarks/results/foldoc_scaling")
  p.add_argument("--entries", default="120,500,2000")
  p.add_argument("--backbones", default="8,32")
  p.add_argument("--forget", type=int, default=50)
  p.add_argument("--epochs", type=float, default=24.0)
  return p.parse_args()


def point(entries: int, backbone: int, args) -> dict:
  a = foldoc.parse_args([f"--entries={entries}", f"--backbone={backbone}",
                         f"--forget={min(args.forget, entries // 4)}", "--heldout=0",
                         f"--epochs={args.epochs}"])
  t0 = time.time()
  docs, _, probes, forget, book_id = foldoc.corpus(a)
  config = foldoc.train_config(a)
  runs = pathlib.Path(args.runs) / f"e{entries}_b{backbone}"
  runs.mkdir(parents=True, exist_ok=True)
  tokenizer = tokenizer_lib.for_run(runs, (d.text for d in docs), config.tokenizer,
                                    config.model.vocab_size)
  jobs.run_all(jobs.comparison(config, runs, docs, [*forget, book_id]), tokenizer)
  models = evaluate.Models(*(inference.load_run(runs / n) for n in ("null", "oracle")))
  result = evaluate.evaluate(models, docs, probes, forget, foldoc.eval_config(a, ()))
  c = result.conditions
  art = FactSet.ARTICLE
  return {"entries": entries, "backbone": backbone, "forgotten": len(forget),
          "probes": c[Cond.ORACLE][art].n,
          "forget_quality": c[Cond.SWITCHED_OFF][art].forget_quality,
          "off_minus_oracle": c[Cond.SWITCHED_OFF][art].median - c[Cond.ORACLE][art].median,
          "sink_on_median": c[Cond.SINK_ON][art].median,
          "off_median": c[Cond.SWITCHED_OFF][art].median,
          "oracle_median": c[Cond.ORACLE][art].median, "minutes": (time.time() - t0) / 60}


def plot(points: list[dict], path: pathlib.Path) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(9, 3.5))
  axes = fig.subplots(1, 2)
  for backbone in sorted({p["backbone"] for p in points}):
    ps = sorted((p for p in points if p["backbone"] == backbone), key=lambda p: p["entries"])
    x = [p["entries"] for p in ps]
    axes[0].plot(x, [p["forget_quality"] for p in ps], "o-", label=f"backbone {backbone}")
    axes[1].plot(x, [p["off_minus_oracle"] for p in ps], "o-", label=f"backbone {backbone}")
  axes[0].axhline(0.05, color="gray", ls="--")
  axes[0].set(xscale="log", yscale="log", xlabel="training entries",
              ylabel="article-specific Forget Quality")
  axes[1].axhline(0.3, color="gray", ls="--")
  axes[1].axhline(-0.3, color="gray", ls="--")
  axes[1].set(xscale="log", xlabel="training entries", ylabel="switched off - oracle median TR")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  args = parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  points = []
  for backbone in (int(b) for b in args.backbones.split(",")):
    for entries in (int(e) for e in args.entries.split(",")):
      points.append(point(entries, backbone, args))
      print(json.dumps(points[-1]))
      (out / "scaling.json").write_text(json.dumps(points, indent=1))
  plot(points, out / "scaling.png")
  print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


if __name__ == "__main__":
  main()
