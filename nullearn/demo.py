"""`nullearn demo`: a NULL and an oracle on the fact world, and the switch in action.

The NULL is trained on every source; the oracle, of the same architecture, is
retrained without a held-out set of forgotten sources. Each forgotten source's
probes are then scored with its sinks on, switched off (its query routed to the
nearest surviving source of its group, the forgotten sinks excluded), with the
backbone only, and on the oracle under the same routing.
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
import numpy as np

from nullearn import evaluate as evaluation
from nullearn import inference, jobs, report, scores
from nullearn.data import factworld
from nullearn.data.tokenizer import Tokenizer, train_tokenizer
from nullearn.switch import Switch

CONDITIONS = ("sink on", "switched off", "all forgotten off", "backbone only", "oracle")
KINDS = ("unique", "shared")


def world_config(config: ml_collections.ConfigDict) -> factworld.FactWorldConfig:
  return factworld.FactWorldConfig(**config.factworld.to_dict())


def run_tokenizer(workdir: pathlib.Path, texts, config) -> Tokenizer:
  """The run's tokenizer: loaded if the workdir has one (a resumed demo), else trained."""
  path = workdir / "tokenizer.model"
  if path.exists():
    return Tokenizer.load(path)
  tok = train_tokenizer(texts, config.model.vocab_size, model_type=config.tokenizer.model_type,
                        byte_fallback=config.tokenizer.byte_fallback,
                        max_sentences=config.tokenizer.max_sentences)
  tok.save(path)
  return tok


def train_pair(config, workdir: pathlib.Path, world: factworld.FactWorld, forget, tokenizer):
  """Trains (or resumes) the NULL on every source and the oracle without `forget`."""
  jobs.run_all(jobs.comparison(config, workdir, world.documents, forget), tokenizer,
               parallel=config.demo.parallel)


def evaluate(workdir: pathlib.Path, world: factworld.FactWorld, forget) -> dict:
  """Truth Ratios of the forgotten sources' probes under every condition.

  The suite's conditions, routed by the world's groups: each forgotten source
  to a surviving source of its own region.
  """
  null = inference.load_run(workdir / "null")
  oracle = inference.load_run(workdir / "oracle")
  forget = [int(f) for f in forget]
  forget_set = set(forget)
  probes = [p for p in world.probes if p.source_id in forget_set]
  routed = {f: world.neighbour(f, forget_set) for f in forget}
  conds = evaluation.conditions(evaluation.Models(null, oracle), routed, forget)
  kinds = np.asarray([p.kind for p in probes])
  table, ratios = {}, {}
  for cond in CONDITIONS:
    r = evaluation.truth_ratios(conds[cond], probes, desc=cond)
    ratios[cond] = r
    table[cond] = {k: scores.summarize(r[kinds == k]) for k in KINDS}
  example = next(p for p in probes if p.kind == "unique")
  neighbour = routed[example.source_id]
  generation = {
      "prompt": example.prompt, "answer": example.answer,
      "sink on": inference.generate(null, example.prompt, Switch.sources([example.source_id])),
      "switched off": inference.generate(
          null, example.prompt, Switch.sources([neighbour], exclude=[example.source_id])),
  }
  return {"table": table, "ratios": {c: r.tolist() for c, r in ratios.items()},
          "kinds": kinds.tolist(), "generation": generation,
          "forgotten_sources": [int(i) for i in forget], "num_probes": len(probes)}


def checks(table: dict) -> list[tuple[str, bool]]:
  """The demo's claims, stated as comparisons so a reader sees which hold."""
  u, s = {c: table[c]["unique"] for c in CONDITIONS}, {c: table[c]["shared"] for c in CONDITIONS}
  return [
      ("unique, sink on: median ratio >= 2", u["sink on"]["median"] >= 2),
      ("unique, sink on: fraction > 1 well above the oracle's (+0.15)",
       u["sink on"]["frac_above_1"] >= u["oracle"]["frac_above_1"] + 0.15),
      ("unique, switched off: median within 0.3 of the oracle's",
       abs(u["switched off"]["median"] - u["oracle"]["median"]) <= 0.3),
      ("unique, switched off: fraction > 1 within 0.1 of the oracle's",
       abs(u["switched off"]["frac_above_1"] - u["oracle"]["frac_above_1"]) <= 0.1),
      ("shared, switched off: keeps >= 85% of the sink-on median",
       s["switched off"]["median"] >= 0.85 * s["sink on"]["median"]),
  ]


def format_report(result: dict) -> str:
  lines = []
  for kind in KINDS:
    lines.append(f"\n{kind} facts ({result['table']['sink on'][kind]['n']} probes of "
                 f"{len(result['forgotten_sources'])} forgotten sources)")
    lines.append(f"  {'condition':<19}{'median TR':>10}{'mean TR':>10}{'frac > 1':>10}")
    for cond in CONDITIONS:
      row = result["table"][cond][kind]
      lines.append(f"  {cond:<19}{row['median']:>10.2f}{row['mean']:>10.2f}"
                   f"{row['frac_above_1']:>10.2f}")
  g = result["generation"]
  lines.append(f"\nprompt: {g['prompt']!r} (answer: {g['answer']!r})")
  lines.append(f"  sink on:      {g['sink on']!r}")
  lines.append(f"  switched off: {g['switched off']!r}")
  lines.append("\nchecks:")
  for name, ok in result["checks"]:
    lines.append(f"  [{'pass' if ok else 'FAIL'}] {name}")
  return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
  report.plot_ratios({c: result["ratios"][c] for c in CONDITIONS}, result["kinds"], path, KINDS)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  world = factworld.generate(world_config(config))
  forget = factworld.choose_forget_set(world, config.demo.num_forget, config.demo.forget_seed)
  tokenizer = run_tokenizer(workdir, [d.text for d in world.documents], config)
  train_pair(config, workdir, world, forget, tokenizer)
  result = evaluate(workdir, world, forget)
  result["checks"] = checks(result["table"])
  result["seconds"] = time.time() - t0
  print(format_report(result))
  (workdir / "demo.json").write_text(json.dumps(result, indent=1))
  plot(result, workdir / "demo.png")
  print(f"\nwrote {workdir / 'demo.json'} and {workdir / 'demo.png'} "
        f"({result['seconds'] / 60:.1f} min)")
  return result
