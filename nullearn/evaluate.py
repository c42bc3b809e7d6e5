"""The unlearning evaluation suite: is a forgotten source really gone?

Every measurement compares the NULL with its sinks switched off against an
oracle retrained without the forgotten sources, on the same probes and the
same routing; post-hoc unlearning (GA, GD, NPO) of a plain transformer and of
the NULL is measured the same way, then all are attacked (relearning,
extraction).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Sequence

import ml_collections
import numpy as np

from nullearn import extraction, inference, routing, scores, unlearning
from nullearn.data import cloze, pipeline
from nullearn.data.records import Document, Probe
from nullearn.inference import Run
from nullearn.switch import Switch

KINDS = ("unique", "inferred", "shared")


@dataclasses.dataclass
class Models:
  null: Run
  oracle: Run | None = None  # the NULL's architecture retrained without the forgotten sources
  plain: Run | None = None  # a plain transformer of the same size trained on the same data


@dataclasses.dataclass(frozen=True)
class Condition:
  """A model and a way of switching it, evaluated on the same probes as the others."""
  run: Run
  switch_for_sources: Callable[[np.ndarray], Switch]  # per-row source ids -> Switch
  params: object = None


def evaluate(models: Models, docs: Sequence[Document], probes: Sequence[Probe],
             forget: Sequence[int], cfg: ml_collections.ConfigDict, *,
             heldout: Sequence[Document] = (), log: Callable[[str], None] = print) -> dict:
  """Runs every section `cfg` asks for and returns the report as a dict."""
  t0 = time.time()
  forget = [int(f) for f in forget]
  forget_set = set(forget)
  if not forget:
    raise ValueError("nothing to evaluate: no sources to forget")
  names = {d.source_id: d.source for d in docs}
  missing = sorted(forget_set - set(names))
  if missing:
    raise ValueError(f"forgotten sources {missing} have no documents in the corpus")
  if not probes:
    log("no probes given: building cloze probes from the text")
    probes = cloze.make_probes(docs, seed=cfg.seed)
  forgotten_probes = [p for p in probes if p.source_id in forget_set]
  if not forgotten_probes:
    raise ValueError("no probe belongs to a forgotten source")

  log("embedding sources for routing")
  router = _router(models.null, docs, names, cfg)
  routed = {f: router.route(f, forget_set) for f in forget}
  conds = conditions(models, routed, forget)
  report = {"forgotten": [{"id": f, "name": names[f], "routed_to": routed[f],
                           "routed_name": names[routed[f]]} for f in forget]}

  log(f"scoring {len(forgotten_probes)} probes of {len(forget)} forgotten sources")
  ratios = {name: truth_ratios(c, forgotten_probes, desc=name) for name, c in conds.items()}
  kinds = _taxonomy(forgotten_probes, ratios.get("oracle"))
  report["probes"] = {"kinds": kinds, "counts": {k: kinds.count(k) for k in KINDS}}
  report["conditions"] = _summaries(ratios, kinds)
  report["ratios"] = {k: v.tolist() for k, v in ratios.items()}

  retained = _retained_probes(probes, forget_set, cfg.max_retained_probes, cfg.seed)
  if retained:
    log(f"scoring {len(retained)} probes of retained sources")
    own = lambda ids: Switch.sources(ids)
    report["retained"] = {
        "sink on": scores.summarize(truth_ratios(Condition(models.null, own), retained)),
        "after forgetting": scores.summarize(truth_ratios(Condition(
            models.null, lambda ids: Switch.sources(ids, exclude=forget)), retained)),
    }

  if heldout:
    report["capability"] = _capability(models, heldout, router, forget_set, cfg, log)

  rows_forget = pipeline.document_rows(models.null.tokenizer, _docs_of(docs, forget_set),
                                       cfg.seq_len)
  unlearned = {}
  if "baselines" in cfg.sections:
    unlearned = _baselines(models, docs, forget_set, rows_forget, forgotten_probes, kinds,
                           ratios.get("oracle"), retained, cfg, log)
    report["baselines"] = {name: u["report"] for name, u in unlearned.items()}
  if "relearning" in cfg.sections:
    report["relearning"] = _relearning(models, conds, unlearned, docs, forget_set,
                                       forgotten_probes, cfg, log)
  if "extraction" in cfg.sections:
    report["extraction"] = _extraction(conds, unlearned, docs, forget_set, cfg, log)
  report["claims"] = claims(report)
  report["seconds"] = time.time() - t0
  return report


def _router(run: Run, docs, names, cfg) -> routing.Router:
  if cfg.routing == "titles":
    return routing.Router(*routing.title_embeddings(names))
  if cfg.routing != "backbone":
    raise ValueError(f"eval.routing must be 'backbone' or 'titles', got {cfg.routing!r}")
  return routing.Router(*routing.backbone_embeddings(run, docs, seq_len=cfg.seq_len))


def conditions(models: Models, routed: dict[int, int], forget: list[int]) -> dict[str, Condition]:
  """Sink on; switched off (each forgotten source alone, and all at once); backbone; expected; oracle."""
  route = np.vectorize(lambda s: routed.get(int(s), int(s)), otypes=[np.int64])
  off = lambda ids: Switch.sources(route(ids), exclude=np.asarray(ids)[:, :1].astype(np.int64))
  conds = {
      "sink on": Condition(models.null, lambda ids: Switch.sources(ids)),
      "switched off": Condition(models.null, off),
      "all forgotten off": Condition(models.null,
                                     lambda ids: Switch.sources(route(ids), exclude=forget)),
      "backbone only": Condition(models.null, lambda ids: Switch.backbone()),
      "expected": Condition(models.null, lambda ids: Switch.expected(exclude=forget)),
  }
  if models.oracle is not None:
    conds["oracle"] = Condition(models.oracle, off)
  if models.plain is not None:
    conds["plain"] = Condition(models.plain, lambda ids: Switch.backbone())
  return conds


def truth_ratios(cond: Condition, probes: Sequence[Probe], desc: str | None = None) -> np.ndarray:
  ids = np.asarray([p.source_id for p in probes], np.int64)
  switch_for = lambda idx: cond.switch_for_sources(ids[idx][:, None])
  nll = inference.option_nll(cond.run, probes, switch_for, params=cond.params, desc=desc)
  return scores.truth_ratio(nll)


def _taxonomy(probes: Sequence[Probe], oracle_ratios: np.ndarray | None) -> list[str]:
  """Shared stays shared; article-specific facts are unique if the oracle cannot tell them."""
  if oracle_ratios is None:
    return [p.kind for p in probes]
  return [p.kind if p.kind == "shared" else ("unique" if r <= 1.0 else "inferred")
          for p, r in zip(probes, oracle_ratios)]


def _summaries(ratios: dict[str, np.ndarray], kinds: list[str]) -> dict:
  """Per kind, plus `article` (unique and inferred: every fact of the source alone) and `all`.

  The unique/inferred split is drawn by the oracle's own ratios, so within it the
  oracle's distribution is cut at 1 and a Forget Quality there measures the cut
  as much as the model; `article` is the uncut set.
  """
  kinds = np.asarray(kinds)
  sets = {k: kinds == k for k in KINDS}
  sets["article"] = kinds != "shared"
  sets["all"] = np.ones(len(kinds), bool)
  oracle = ratios.get("oracle")
  out = {}
  for name, r in ratios.items():
    row = {k: scores.summarize(r[sel]) for k, sel in sets.items()}
    if oracle is not None:
      for k, sel in sets.items():
        row[k]["forget_quality"] = scores.forget_quality(r[sel], oracle[sel])
    out[name] = row
  return out


def _retained_probes(probes, forget_set, limit: int, seed: int) -> list[Probe]:
  keep = [p for p in probes if p.source_id not in forget_set]
  if len(keep) > limit:
    idx = np.random.default_rng(seed).choice(len(keep), limit, replace=False)
    keep = [keep[i] for i in sorted(idx)]
  return keep


def _docs_of(docs: Sequence[Document], sources: set[int]) -> list[Document]:
  return [d for d in docs if d.source_id in sources]


def _capability(models: Models, heldout, router, forget_set, cfg, log) -> dict:
  """Held-out loss per token: text no model trained on."""
  log(f"held-out loss on {len(heldout)} documents")
  rows = pipeline.document_rows(models.null.tokenizer, heldout, cfg.seq_len)
  h_sources, h_emb = routing.backbone_embeddings(models.null, heldout, seq_len=cfg.seq_len)
  nearest = {int(s): router.nearest(e, forget_set) for s, e in zip(h_sources, h_emb)}
  route = np.vectorize(lambda s: nearest[int(s)], otypes=[np.int64])
  out = {
      "null (routed)": unlearning.heldout_nll(models.null, rows,
                                              switch_for=lambda ids: Switch.sources(route(ids))),
      "null (backbone only)": unlearning.heldout_nll(models.null, rows,
                                                     switch_for=lambda ids: Switch.backbone()),
      "null (expected)": unlearning.heldout_nll(models.null, rows,
                                                switch_for=lambda ids: Switch.expected()),
  }
  if models.plain is not None:
    out["plain"] = unlearning.heldout_nll(models.plain, rows)
  out["tokens"] = float(rows["weights"].sum())
  return out


def _baselines(models: Models, docs, forget_set, rows_forget, probes, kinds, oracle_ratios,
               retained, cfg, log) -> dict:
  """GA, GD and NPO on the plain transformer and on the NULL with its sinks on."""
  retain_docs = [d for d in docs if d.source_id not in forget_set]
  rng = np.random.default_rng(cfg.seed)
  retain_docs = [retain_docs[i] for i in rng.permutation(len(retain_docs))[:cfg.retain_docs]]
  rows_retain = pipeline.document_rows(models.null.tokenizer, retain_docs, cfg.seq_len)
  out = {}
  targets = [("plain", models.plain), ("null", models.null)]
  for model_name, run in [(n, r) for n, r in targets if r is not None]:
    for method in cfg.unlearn_methods:
      name = f"{model_name}+{method}"
      log(f"unlearning: {name} ({cfg.unlearn_steps} steps at lr {cfg.unlearn_lr})")
      params = unlearning.unlearn(run, rows_forget, method=method, steps=cfg.unlearn_steps,
                                  lr=cfg.unlearn_lr, batch_size=cfg.unlearn_batch,
                                  rows_retain=rows_retain if method != "ga" else None,
                                  beta=cfg.npo_beta, seed=cfg.seed)
      cond = Condition(run, lambda ids: Switch.sources(ids), params)
      r = truth_ratios(cond, probes, desc=name)
      rep = _summaries({name: r, **({"oracle": oracle_ratios} if oracle_ratios is not None
                                    else {})}, kinds)[name]
      if retained:
        rep["retained"] = scores.summarize(truth_ratios(cond, retained))
      out[name] = {"condition": cond, "report": rep, "ratios": r}
  return out


def split_halves(docs: Sequence[Document]) -> tuple[list[Document], list[Document]]:
  """Each source's text in two halves: alternate documents, or alternate sentences of one."""
  by_source: dict[int, list[Document]] = {}
  for d in docs:
    by_source.setdefault(d.source_id, []).append(d)
  first, second = [], []
  for source_docs in by_source.values():
    if len(source_docs) > 1:
      first += source_docs[0::2]
      second += source_docs[1::2]
      continue
    d = source_docs[0]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", d.text) if s]
    first.append(dataclasses.replace(d, text=" ".join(sentences[0::2])))
    second.append(dataclasses.replace(d, text=" ".join(sentences[1::2])))
  return first, [d for d in second if d.text]


def _relearning(models, conds, unlearned, docs, forget_set, probes, cfg, log) -> dict:
  """Fine-tune each unlearned model on half of the forgotten text; test on the other half."""
  train_half, test_half = split_halves(_docs_of(docs, forget_set))
  test_text = {}
  for d in test_half:
    test_text[d.source_id] = test_text.get(d.source_id, "") + " " + d.text
  held_probes = [p for p in probes if f"{p.prompt} {p.answer}" in test_text.get(p.source_id, "")]
  held_probes = held_probes or list(probes)
  tok = models.null.tokenizer
  rows_train = pipeline.document_rows(tok, train_half, cfg.seq_len)
  rows_test = pipeline.document_rows(tok, test_half, cfg.seq_len)
  attacked = {name: conds[name] for name in ("switched off", "oracle") if name in conds}
  for name, u in unlearned.items():
    if name.startswith("plain+") or (models.plain is None and name.startswith("null+")):
      attacked[name] = u["condition"]
  steps = sorted(set(cfg.relearn_steps))
  curves = {}
  for name, cond in attacked.items():
    log(f"relearning attack on {name}: {steps[-1]} steps at lr {cfg.relearn_lr}")
    snaps = unlearning.finetune_snapshots(cond.run, rows_train, step_counts=[0, *steps],
                                          lr=cfg.relearn_lr, batch_size=cfg.relearn_batch,
                                          switch_for=cond.switch_for_sources, params=cond.params,
                                          seed=cfg.seed)
    curve = {"steps": [0, *steps], "loss": [], "median_ratio": []}
    for k in curve["steps"]:
      c = dataclasses.replace(cond, params=snaps[k])
      curve["loss"].append(unlearning.heldout_nll(cond.run, rows_test, params=snaps[k],
                                                  switch_for=cond.switch_for_sources))
      curve["median_ratio"].append(float(np.median(truth_ratios(c, held_probes))))
    curves[name] = curve
  before = {}  # the facts as each model knew them before any post-hoc unlearning
  for base_name in {name.split("+")[0] for name in curves if "+" in name}:
    base = models.plain if base_name == "plain" else models.null
    before[base_name] = float(np.median(truth_ratios(Condition(base, lambda ids: Switch.sources(ids)),
                                                held_probes)))
  return {"curves": curves, "before_unlearning_median_ratio": before,
          "num_test_probes": len(held_probes), "test_tokens": float(rows_test["weights"].sum())}


def _extraction(conds, unlearned, docs, forget_set, cfg, log) -> dict:
  """Verbatim extraction and the adversarial compression ratio of the forgotten text."""
  forgotten_docs = _docs_of(docs, forget_set)
  targets = {name: conds[name] for name in ("sink on", "switched off", "oracle") if name in conds}
  for name, u in unlearned.items():
    if name.endswith("+npo"):
      targets[name] = u["condition"]
  out = {}
  for name, cond in targets.items():
    log(f"extraction attacks on {name}")
    ids = np.asarray([d.source_id for d in forgotten_docs], np.int64)
    verb = extraction.verbatim_extraction(
        cond.run, forgotten_docs, lambda idx: cond.switch_for_sources(ids[idx][:, None]),
        prefix_tokens=cfg.extraction_prefix, continuation_tokens=cfg.extraction_continuation,
        max_samples=cfg.extraction_samples, params=cond.params)
    acrs = []
    for doc in _acr_targets(forgotten_docs, cfg.acr_targets):
      tokens = cond.run.tokenizer.encode(doc.text)[:cfg.acr_target_len]
      switch = cond.switch_for_sources(np.asarray([[doc.source_id]], np.int64))
      acrs.append(extraction.adversarial_compression_ratio(
          cond.run, tokens, switch, start_len=min(5, len(tokens)), params=cond.params,
          steps=cfg.gcg_steps,
          top_k=cfg.gcg_top_k, batch_size=cfg.gcg_batch, seed=cfg.seed))
    out[name] = {"exact_match": verb["exact_match"], "rouge_l": verb["rouge_l"],
                 "samples": verb["num_samples"],
                 "acr_mean": float(np.mean([a["acr"] for a in acrs])) if acrs else float("nan"),
                 "acr_found": [bool(a["found"]) for a in acrs],
                 "acr": [float(a["acr"]) for a in acrs]}
  return out


def _acr_targets(docs: Sequence[Document], n: int) -> list[Document]:
  """The first document of each forgotten source, the largest sources (a book) first."""
  size: dict[int, int] = {}
  first: dict[int, Document] = {}
  for d in docs:
    size[d.source_id] = size.get(d.source_id, 0) + len(d.text)
    first.setdefault(d.source_id, d)
  return [first[s] for s in sorted(first, key=lambda s: -size[s])][:n]


def claims(report: dict) -> list[dict]:
  """The suite's questions, answered from the measurements (either way)."""
  out = []
  cond = report["conditions"]
  if "oracle" in cond:
    for kind, what in (("article", "article-specific facts (unique and inferred)"),
                       ("unique", "unique facts (oracle ratio <= 1, a cut distribution)"),
                       ("shared", "shared facts")):
      fq = cond["switched off"][kind].get("forget_quality", float("nan"))
      if np.isfinite(fq):
        out.append({"claim": f"switched-off {what} match the oracle under the same routing "
                             "(Forget Quality p >= 0.05)", "value": fq, "holds": bool(fq >= 0.05)})
  on, off = cond["sink on"]["shared"]["median"], cond["switched off"]["shared"]["median"]
  if np.isfinite(on) and np.isfinite(off):
    out.append({"claim": "shared facts keep >= 85% of their sink-on median when switched off",
                "value": off / on, "holds": bool(off >= 0.85 * on)})
  rel = report.get("relearning")
  if rel and "oracle" in rel["curves"] and "switched off" in rel["curves"]:
    o, n = np.asarray(rel["curves"]["oracle"]["loss"]), np.asarray(rel["curves"]["switched off"]["loss"])
    gap = float(np.max(np.abs(n - o) / o))
    out.append({"claim": "relearning: switched-off NULL within 10% of the oracle's loss at every "
                         "step count", "value": gap, "holds": bool(gap <= 0.10)})
  for name, curve in (rel or {}).get("curves", {}).items():
    if not name.endswith("+npo"):
      continue
    before = rel["before_unlearning_median_ratio"][name.split("+")[0]]
    within = [r for s, r in zip(curve["steps"], curve["median_ratio"]) if 0 < s <= 10]
    best = max(within) if within else float("nan")
    out.append({"claim": f"relearning: {name} forgotten facts back above 80% of their "
                         "pre-unlearning ratio within 10 steps",
                "value": best / before, "holds": bool(best >= 0.8 * before)})
  return out
