"""`nullearn demo`: a NULL and an oracle on the fact world, and the switch in action.

The NULL is trained on every source; the oracle, of the same architecture, is
retrained without a held-out set of forgotten sources. Each forgotten source's
probes are then scored with its sinks on, switched off (its query routed to the
nearest surviving source of its group, the forgotten sinks excluded), with the
backbone only, and on the oracle under the same routing.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import ml_collections

from nullearn import evaluate as evaluation
from nullearn import inference, jobs, report, results
from nullearn.data import factworld
from nullearn.data import tokenizer as tokenizer_lib
from nullearn.results import Cond, FactSet
from nullearn.switch import Switch

CONDITIONS = (Cond.SINK_ON, Cond.SWITCHED_OFF, Cond.ALL_OFF, Cond.BACKBONE, Cond.ORACLE)
# The world's own kinds: a source's facts are all its own ("unique") or its region's.
KINDS = (FactSet.UNIQUE, FactSet.SHARED)


def train_pair(config, workdir: pathlib.Path, world: factworld.FactWorld, forget, tokenizer):
  """Trains (or resumes) the NULL on every source and the oracle without `forget`."""
  jobs.run_all(
    jobs.comparison(config, workdir, world.documents, forget),
    tokenizer,
    parallel=config.demo.parallel,
  )


def evaluate(workdir: pathlib.Path, world: factworld.FactWorld, forget, thresholds) -> dict:
  """Truth Ratios of the forgotten sources' probes under every condition, and the claims.

  The suite's conditions and claims, routed by the world's groups: each
  forgotten source to a surviving source of its own region.
  """
  null = inference.load_run(workdir / "null")
  oracle = inference.load_run(workdir / "oracle")
  forget = [int(f) for f in forget]
  forget_set = set(forget)
  probes = [p for p in world.probes if p.source_id in forget_set]
  routed = {f: world.neighbour(f, forget_set) for f in forget}
  conds = evaluation.conditions(evaluation.Models(null, oracle), routed, forget)
  kinds = [p.kind for p in probes]
  ratios = {c: evaluation.truth_ratios(conds[c], probes, desc=c) for c in CONDITIONS}
  summaries = results.summarize(ratios, kinds)
  example = next(p for p in probes if p.kind == FactSet.UNIQUE)
  neighbour = routed[example.source_id]
  generation = {
    "prompt": example.prompt,
    "answer": example.answer,
    "sink on": inference.generate(null, example.prompt, Switch.sources(example.source_id)),
    "switched off": inference.generate(
      null, example.prompt, Switch.sources(neighbour, exclude=[example.source_id])
    ),
  }
  return {
    "table": {c: {k: summaries[c][k] for k in KINDS} for c in CONDITIONS},
    "ratios": {c: r.tolist() for c, r in ratios.items()},
    "kinds": kinds,
    "generation": generation,
    "forgotten_sources": forget,
    "num_probes": len(probes),
    "claims": results.claims(summaries, thresholds),
  }


def format_report(result: dict) -> str:
  lines = []
  for kind in KINDS:
    lines.append(
      f"\n{kind} facts ({result['table'][Cond.SINK_ON][kind].n} probes of "
      f"{len(result['forgotten_sources'])} forgotten sources)"
    )
    lines.append(
      f"  {'condition':<19}{'median TR':>10}{'mean TR':>10}{'frac > 1':>10}{'TOFU TR':>10}"
    )
    for cond in CONDITIONS:
      row = result["table"][cond][kind]
      lines.append(
        f"  {cond:<19}{row.median:>10.2f}{row.mean:>10.2f}{row.frac_above_1:>10.2f}"
        f"{row.tofu_forget:>10.2f}"
      )
  g = result["generation"]
  lines.append(f"\nprompt: {g['prompt']!r} (answer: {g['answer']!r})")
  lines.append(f"  sink on:      {g['sink on']!r}")
  lines.append(f"  switched off: {g['switched off']!r}")
  lines.append("\nclaims:")
  for c in result["claims"]:
    lines.append(f"  [{'pass' if c.holds else 'FAIL'}] {c.claim} ({c.value:.3g})")
  return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
  report.plot_ratios({c: result["ratios"][c] for c in CONDITIONS}, result["kinds"], path, KINDS)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  world = factworld.generate(factworld.FactWorldConfig.from_config(config))
  forget = factworld.choose_forget_set(world, config.demo.num_forget, config.demo.forget_seed)
  tokenizer = tokenizer_lib.for_run(
    workdir, (d.text for d in world.documents), config.tokenizer, config.model.vocab_size
  )
  train_pair(config, workdir, world, forget, tokenizer)
  result = evaluate(workdir, world, forget, config.eval.claims)
  print(format_report(result))
  # No timings in demo.json: the same config on the same machine writes the same file.
  (workdir / "demo.json").write_text(json.dumps(_jsonable(result), indent=1))
  plot(result, workdir / "demo.png")
  print(
    f"\nwrote {workdir / 'demo.json'} and {workdir / 'demo.png'} "
    f"({(time.time() - t0) / 60:.1f} min)"
  )
  return result


def _jsonable(result: dict) -> dict:
  out = dict(result)
  out["table"] = {
    c: {k: dataclasses.asdict(v) for k, v in row.items()} for c, row in result["table"].items()
  }
  out["claims"] = [dataclasses.asdict(c) for c in result["claims"]]
  return out
