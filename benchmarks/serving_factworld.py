"""Serving on the fact world: routing accuracy, prompt-routed unlearning and attribution.

Reuses the demo's NULL and oracle (`nullearn demo --workdir=WORKDIR` trains them)
and the demo's 100 forgotten sources, and measures:

- routing accuracy: how often a forgotten source (its title and leading words:
  eval's "switched off" routing) or one of its probes' prompts (a deployment's
  routing) is routed to a surviving source of its own region, by BM25 (the
  serving router) and by the NULL's backbone-only embeddings (cosine);
- the evaluation's conditions with BM25 routing, "prompt routed" included
  (Truth Ratio medians per fact kind; shared facts should keep >= 85%);
- attribution: how often a unique fact's own source ranks first by sink gain
  (on the continuation, and on the whole text), among the router's candidates
  for the prompt and among all 1,000 sources; and how often it still does for a
  false continuation (a distractor).

  python benchmarks/serving_factworld.py [--workdir runs/demo] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from nullearn import attribution, evaluate, inference, routing
from nullearn import router as router_lib
from nullearn.configs import tiny
from nullearn.data import factworld
from nullearn.data.records import Document
from nullearn.results import Cond, FactSet


def routing_accuracy(run, world, forget, serve) -> dict:
  """Fraction routed within the region: sources (eval) and prompts per kind (serving)."""
  docs, forget_set = world.documents, set(forget)
  index = router_lib.PromptRouter.in_memory(router_lib.source_texts(docs, serve.leading_words))
  text = routing.TextRouter(index, docs, serve.leading_words)
  embed = lambda d: routing.backbone_embeddings(run, d, seq_len=128)
  emb = routing.Router.of(docs, embed)
  same = lambda a, b: world.groups[a] == world.groups[b]
  probes = [p for p in world.probes if p.source_id in forget_set]
  _, prompt_emb = embed([Document(i, "prompt", p.prompt) for i, p in enumerate(probes)])
  by_bm25 = [index.route(p.prompt, forget, serve.min_score).source for p in probes]
  by_emb = [emb.nearest(e, forget_set) for e in prompt_emb]
  out = {
    "sources": {
      "bm25": np.mean([same(f, text.route(f, forget_set)) for f in forget]),
      "backbone": np.mean([same(f, emb.route(f, forget_set)) for f in forget]),
    }
  }
  for kind in ("unique", "shared"):
    sel = [i for i, p in enumerate(probes) if p.kind == kind]
    out[f"{kind} prompts"] = {
      "bm25": np.mean(
        [by_bm25[i] is not None and same(probes[i].source_id, by_bm25[i]) for i in sel]
      ),
      "backbone": np.mean([same(probes[i].source_id, by_emb[i]) for i in sel]),
      "bm25 fallback": np.mean([by_bm25[i] is None for i in sel]),
    }
  return {k: {m: float(v) for m, v in d.items()} for k, d in out.items()}


def conditions(null, oracle, world, forget, config) -> dict:
  cfg = config.eval
  cfg.sections = ()
  cfg.max_retained_probes = 0
  result = evaluate.evaluate(
    evaluate.Models(null, oracle), world.documents, world.probes, forget, cfg, serve=config.serve
  )
  table = {
    str(c): {
      k: result.conditions[c][k].median for k in (FactSet.UNIQUE, FactSet.SHARED, FactSet.ARTICLE)
    }
    for c in result.conditions
  }
  on = result.conditions[Cond.SINK_ON][FactSet.SHARED].median
  keep = {
    str(c): result.conditions[c][FactSet.SHARED].median / on
    for c in (Cond.SWITCHED_OFF, Cond.PROMPT_ROUTED, Cond.ORACLE)
  }
  fq = {
    str(c): result.conditions[c][FactSet.ARTICLE].forget_quality
    for c in (Cond.SWITCHED_OFF, Cond.PROMPT_ROUTED)
  }
  return {
    "median_truth_ratio": table,
    "shared_keep_of_sink_on": keep,
    "article_forget_quality": fq,
    "seconds": result.seconds,
  }


def attribution_rate(run, world, serve, n_all: int) -> dict:
  """How often a unique fact's own source ranks first: among the router's candidates for
  the prompt (and its first 8), among all sources, by continuation and by whole-text gain;
  and, for a distractor as the continuation, how often the own source still ranks first."""
  index = router_lib.PromptRouter.in_memory(
    router_lib.source_texts(world.documents, serve.leading_words)
  )
  unique = [p for p in world.probes if p.kind == "unique"]
  probes = [unique[i] for i in np.random.default_rng(0).choice(len(unique), 400, replace=False)]
  everyone = sorted({d.source_id for d in world.documents})
  hits: dict[str, list[bool]] = {}
  first = lambda ranked, p: ranked[0].source == p.source_id
  for i, p in enumerate(probes):
    cands = attribution.candidates(run, index, p.prompt, serve.candidates)
    hits.setdefault("own source among the candidates", []).append(p.source_id in cands)
    for score in attribution.SCORES:
      ranked = attribution.attribute(run, p.prompt, p.answer, cands, score)
      hits.setdefault(f"{score}: first among {len(cands)} routed", []).append(first(ranked, p))
      top8 = [a for a in ranked if a.source in cands[:8]]
      hits.setdefault(f"{score}: first among the 8 best routed", []).append(first(top8, p))
      wrong = attribution.attribute(run, p.prompt, p.distractors[0], cands, score)
      hits.setdefault(f"{score}: first for a distractor (routed)", []).append(first(wrong, p))
      if i < n_all:
        ranked = attribution.attribute(run, p.prompt, p.answer, everyone, score)
        hits.setdefault(f"{score}: first among all {len(everyone)}", []).append(first(ranked, p))
  return {
    "probes": len(probes),
    "probes_ranked_among_all": min(n_all, len(probes)),
    **{k: float(np.mean(v)) for k, v in hits.items()},
  }


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default="runs/demo", help="a `nullearn demo` output directory")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument(
    "--all_sources_probes", type=int, default=50, help="probes also ranked against every source"
  )
  args = p.parse_args()
  config = tiny.get_config()
  world = factworld.generate(factworld.FactWorldConfig.from_config(config))
  forget = list(factworld.choose_forget_set(world, config.demo.num_forget, config.demo.forget_seed))
  workdir = pathlib.Path(args.workdir)
  null, oracle = (inference.load_run(workdir / n) for n in ("null", "oracle"))
  t0 = time.time()
  out = {"routing_within_region": routing_accuracy(null, world, forget, config.serve)}
  print(json.dumps(out, indent=1))
  out["attribution"] = attribution_rate(null, world, config.serve, args.all_sources_probes)
  print(json.dumps(out["attribution"], indent=1))
  out["conditions_bm25"] = conditions(null, oracle, world, forget, config)
  out["seconds"] = time.time() - t0
  path = pathlib.Path(args.out) / "serving_factworld.json"
  path.write_text(json.dumps(out, indent=1))
  print(format_table(out))
  print(f"wrote {path}")


def format_table(out: dict) -> str:
  r = out["routing_within_region"]
  lines = [
    "routed within the region      bm25   backbone",
    *(f"  {k:<27}{v['bm25']:>6.2f}{v['backbone']:>11.2f}" for k, v in r.items()),
    "",
    "median Truth Ratio (BM25 routing)   unique  shared  article",
  ]
  for c, row in out["conditions_bm25"]["median_truth_ratio"].items():
    lines.append(f"  {c:<34}{row['unique']:>6.2f}{row['shared']:>8.2f}{row['article']:>9.2f}")
  lines.append(
    "shared facts kept: "
    + ", ".join(f"{c} {v:.0%}" for c, v in out["conditions_bm25"]["shared_keep_of_sink_on"].items())
  )
  lines += ["", f"attribution ({out['attribution']['probes']} unique probes): own source first"]
  lines += [
    f"  {k:<48}{v:>7.1%}" for k, v in out["attribution"].items() if ":" in k or k.startswith("own")
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
