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
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from nullearn import extraction, inference, routing, scores, unlearning
from nullearn import router as router_lib
from nullearn.configs import base
from nullearn.data import cloze, pipeline
from nullearn.data import corpus as corpus_lib
from nullearn.data.records import Document, Probe
from nullearn.inference import Run
from nullearn.results import Cond, FactSet, Relearning, Report, Summary, claims, summarize
from nullearn.switch import Switch


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

  def option_nll(self, probes: Sequence[Probe], desc: str | None = None) -> np.ndarray:
    ids = np.asarray([p.source_id for p in probes], np.int64)
    return inference.option_nll(
      self.run,
      probes,
      lambda idx: self.switch_for_sources(ids[idx][:, None]),
      params=self.params,
      desc=desc,
    )


@dataclasses.dataclass(frozen=True)
class PromptRouted:
  """Each probe's prompt routed, as a deployment routes it, own sinks excluded.

  `routes[prompt]` is the surviving source serving it, or None when no source
  scored above `serve.min_score`: those prompts are served by `fallback` (per-row
  own ids -> switch), scored in their own pass since a batch has one switch mode.
  """

  run: Run
  routes: dict[str, int | None]
  fallback: Callable[[np.ndarray], Switch]
  params: object = None

  def option_nll(self, probes: Sequence[Probe], desc: str | None = None) -> np.ndarray:
    own = np.asarray([p.source_id for p in probes], np.int64)
    to = np.asarray([_or(self.routes[p.prompt], -1) for p in probes], np.int64)
    served = lambda i: Switch.sources(to[i][:, None], exclude=own[i][:, None])
    tables = []
    for idx, switch_of in (
      (np.flatnonzero(to >= 0), served),
      (np.flatnonzero(to < 0), lambda i: self.fallback(own[i][:, None])),
    ):
      if idx.size:
        tables.append(
          (
            idx,
            inference.option_nll(
              self.run,
              [probes[i] for i in idx],
              lambda j, idx=idx, f=switch_of: f(idx[j]),
              params=self.params,
              desc=desc,
            ),
          )
        )
    out = np.full((len(probes), max(t.shape[1] for _, t in tables)), np.nan, np.float32)
    for idx, t in tables:
      out[idx, : t.shape[1]] = t
    return out


def _or(value, default):
  return default if value is None else value


class ModelMismatchError(ValueError):
  """The oracle or the plain model is not the comparison the report would claim it is."""


def validate(models: Models, forget: Sequence[int]) -> list[str]:
  """Why the oracle and the plain model are not the controls they must be, one line each.

  An oracle must be the NULL's architecture and geometry, with the NULL's
  tokenizer, trained on the NULL's corpus minus (at least) every forgotten
  source; a plain model must have the NULL's tokenizer and corpus and its MLP
  width with every neuron on (pool 0). An empty list means both are valid.
  """
  null = models.null.meta
  problems = []
  for flag, run in (("--oracle", models.oracle), ("--plain", models.plain)):
    if run is None:
      continue
    meta = run.meta
    if meta.get("tokenizer") != null.get("tokenizer"):
      problems.append(
        f"{flag}: tokenizer {meta.get('tokenizer')} differs from the NULL's "
        f"{null.get('tokenizer')}: their token ids mean different things"
      )
    arch, want = meta.get("architecture"), null.get("architecture")
    if arch != want:
      diffs = (
        "; ".join(
          f"{k} {arch.get(k)!r} vs {want.get(k)!r}" for k in want if arch.get(k) != want.get(k)
        )
        if arch and want
        else "unrecorded"
      )
      problems.append(f"{flag}: architecture differs from the NULL's ({diffs})")
    corpus, want_corpus = meta.get("data", {}).get("corpus"), null.get("data", {}).get("corpus")
    if corpus != want_corpus:
      problems.append(f"{flag}: trained on corpus {corpus}, the NULL on {want_corpus}")
    excluded = set(meta.get("data", {}).get("excluded", ()))
    geometry = run.model_cfg.geometry
    if flag == "--oracle":
      if geometry != models.null.model_cfg.geometry:
        problems.append(
          f"{flag}: sink geometry differs from the NULL's "
          f"({'; '.join(geometry.differences(models.null.model_cfg.geometry))})"
        )
      seen = sorted(set(int(f) for f in forget) - excluded)
      if seen:
        problems.append(
          f"{flag}: was trained on forgotten sources {seen[:10]}"
          f"{' ...' if len(seen) > 10 else ''} (its data.exclude_sources lacks "
          "them): it is not an oracle for --forget"
        )
    else:
      null_geometry = models.null.model_cfg.geometry
      if geometry.pool or geometry.width != null_geometry.width:
        problems.append(
          f"{flag}: must have pool 0 and the NULL's MLP width "
          f"{null_geometry.width}, has backbone {geometry.backbone}, pool "
          f"{geometry.pool}"
        )
      if excluded != set(null.get("data", {}).get("excluded", ())):
        problems.append(f"{flag}: excluded sources {sorted(excluded)} differ from the NULL's")
  return problems


def evaluate(
  models: Models,
  docs: Sequence[Document],
  probes: Sequence[Probe],
  forget: Sequence[int],
  cfg: ml_collections.ConfigDict,
  *,
  heldout: Sequence[Document] = (),
  log: Callable[[str], None] = print,
  forced: Sequence[str] = (),
  serve: ml_collections.ConfigDict | None = None,
  index: router_lib.PromptRouter | None = None,
  read: Callable[[Sequence[int]], list[Document]] | None = None,
) -> Report:
  """Runs every section `cfg` asks for and returns the report.

  `forced` lists the model checks (`validate`) a user chose to override; the
  report carries them. `serve` (default: the base config's) is the serving
  policy the prompt-routed condition follows (index, threshold, fallback).

  `index` routes (default: one built over `docs`, which must then hold every
  source). A lazy corpus passes the run's saved router over the whole corpus,
  and `read(ids)`, which reads the sources it routes to that `docs` lacks: they
  join the documents (names, retained probes), so what is read grows with the
  forgotten sources, never with the corpus.
  """
  serve = serve or base.get_config().serve
  if len(models.null.ledger):
    raise ValueError(
      f"the NULL was loaded with its forget ledger applied "
      f"({len(models.null.ledger)} sources gone from its weights): evaluation "
      "measures the counterfactual, so load it with "
      "inference.load_run(workdir, apply_ledger=False)"
    )
  t0 = time.time()
  forget = [int(f) for f in forget]
  forget_set = set(forget)
  if not forget:
    raise ValueError("--forget: nothing to evaluate, no sources to forget")
  names = {d.source_id: d.source for d in docs}
  missing = sorted(forget_set - set(names))
  if missing:
    raise ValueError(f"--forget: sources {missing} have no documents in the corpus")
  automatic = not probes
  if automatic:
    log("no probes given: building cloze probes from the text")
    probes = cloze.make_probes(docs, seed=cfg.seed)
  forgotten_probes = _probes_of(probes, forget_set)
  if not forgotten_probes:
    raise ValueError("--forget: no probe belongs to a forgotten source")
  inference.option_rows(models.null.tokenizer, probes, models.null.context)  # refuse bad ones now

  log(f"routing ({cfg.routing})")
  if index is None:
    index = router_lib.PromptRouter.in_memory(router_lib.source_texts(docs, serve.leading_words))
  elif cfg.routing != "bm25":
    raise ValueError(
      f"eval.routing={cfg.routing!r} embeds every source it may route to; over "
      "a whole corpus only 'bm25', the run's saved router, routes"
    )
  router = _router(models.null, docs, index, cfg, serve)
  routed = {f: router.route(f, forget_set) for f in forget}
  prompt_routes = {
    p.prompt: index.route(p.prompt, forget, serve.min_score).source for p in forgotten_probes
  }
  neighbours = sorted({*routed.values(), *prompt_routes.values()} - {None} - set(names))
  if neighbours:
    if read is None:
      raise ValueError(
        f"the router returned sources {neighbours[:10]} that have no documents "
        "here, and no corpus to read them from was given"
      )
    log(f"reading the {len(neighbours)} sources the forgotten ones are routed to")
    extra = read(neighbours)
    docs = [*docs, *extra]
    names |= {d.source_id: d.source for d in extra}
    if automatic:
      probes = [*probes, *_probes_of(cloze.make_probes(docs, seed=cfg.seed), set(neighbours))]
  conds = conditions(models, routed, forget, prompt_routes, serve.fallback)
  log(f"scoring {len(forgotten_probes)} probes of {len(forget)} forgotten sources")
  ratios = {name: truth_ratios(c, forgotten_probes, desc=name) for name, c in conds.items()}
  kinds = _taxonomy(forgotten_probes, ratios.get(Cond.ORACLE))
  report = Report(
    forgotten=[
      {
        "id": f,
        "name": names[f],
        "routed_to": routed[f],
        "routed_name": names[routed[f]],
        "prompts_routed_to": [
          prompt_routes[p.prompt] for p in forgotten_probes if p.source_id == f
        ],
      }
      for f in forget
    ],
    kinds=kinds,
    conditions=summarize(ratios, kinds),
    ratios={k: v.tolist() for k, v in ratios.items()},
    probes=[
      {"source_id": p.source_id, "prompt": p.prompt, "answer": p.answer} for p in forgotten_probes
    ],
    forced=list(forced),
  )

  retained = retained_probes(probes, forget_set, cfg.max_retained_probes, cfg.seed)
  if retained:
    log(f"scoring {len(retained)} probes of retained sources")
    report.retained = {
      "sink on": Summary.of(truth_ratios(Condition(models.null, Switch.sources), retained)),
      "after forgetting": Summary.of(
        truth_ratios(
          Condition(models.null, lambda ids: Switch.sources(ids, exclude=forget)), retained
        )
      ),
    }
  if heldout:
    report.capability = _capability(models, heldout, router, forget_set, cfg, log)

  rows_forget = pipeline.document_rows(
    models.null.tokenizer, _docs_of(docs, forget_set), cfg.seq_len
  )
  unlearned = {}
  if "baselines" in cfg.sections:
    unlearned = _baselines(
      models,
      docs,
      forget_set,
      rows_forget,
      forgotten_probes,
      kinds,
      ratios.get(Cond.ORACLE),
      retained,
      cfg,
      log,
    )
    report.baselines = {name: u["report"] for name, u in unlearned.items()}
  if "relearning" in cfg.sections:
    report.relearning = _relearning(
      models, conds, unlearned, docs, forget_set, forgotten_probes, cfg, log
    )
  if "extraction" in cfg.sections:
    report.extraction = _extraction(conds, unlearned, docs, forget_set, cfg, log)
  report.budget = forgetting_budget(models.null.model_cfg.geometry, len(forget))
  report.claims = claims(report.conditions, cfg.claims, report.relearning)
  report.seconds = time.time() - t0
  return report


def evaluate_corpus(
  models: Models,
  corpus: corpus_lib.Corpus,
  forget: Sequence[int],
  cfg: ml_collections.ConfigDict,
  **kwargs,
) -> Report:
  """`evaluate` on the corpus the NULL was trained on, less its held-out sources.

  In memory: every document, routed by an index built over them. Lazy (all of
  Wikipedia): the forgotten sources and a seeded sample of `cfg.retained_sources`
  others are read, routed by the run's saved router over the whole corpus (as a
  deployment routes), and the sources it routes them to are read too.
  """
  docs, heldout = corpus_lib.evaluation_documents(
    corpus,
    forget,
    models.null.meta.get("data", {}).get("heldout", ()),
    retained=cfg.retained_sources,
    seed=cfg.seed,
  )
  if not corpus.in_memory:
    kwargs |= dict(
      index=models.null.router(), read=lambda ids: corpus_lib.documents_of(corpus, ids)
    )
  return evaluate(models, docs, corpus.probes, forget, cfg, heldout=heldout, **kwargs)


def forgetting_budget(geometry, forgotten: int) -> dict:
  """How much of the pool `forgotten` sources take, and how many sources the geometry can
  forget before 1%, 10% and 50% of its pool (and of every other source's sinks) is gone."""
  return {
    "forgotten": forgotten,
    "pool_removed": geometry.lost_fraction(forgotten),
    "active": geometry.active,
    "pool": geometry.pool,
    "sources_for": {f: geometry.forgetting_budget(f) for f in (0.01, 0.1, 0.5)},
  }


def _router(run: Run, docs, index, cfg, serve) -> routing.Router | routing.TextRouter:
  if cfg.routing == "bm25":
    return routing.TextRouter(index, docs, serve.leading_words)
  if cfg.routing == "titles":
    return routing.Router.of(docs, routing.title_embeddings)
  if cfg.routing != "backbone":
    raise ValueError(f"eval.routing must be 'bm25', 'backbone' or 'titles', got {cfg.routing!r}")
  return routing.Router.of(docs, lambda d: routing.backbone_embeddings(run, d, seq_len=cfg.seq_len))


def conditions(
  models: Models,
  routed: dict[int, int],
  forget: list[int],
  prompt_routes: dict[str, int | None] | None = None,
  fallback: str = "expected",
) -> dict[Cond, Condition | PromptRouted]:
  """Sink on; switched off (each forgotten source alone, and all at once); prompt routed
  (when `prompt_routes` are given); backbone; expected; the oracle under the same routing;
  the plain model."""
  route = np.vectorize(lambda s: routed.get(int(s), int(s)), otypes=[np.int64])
  off = lambda ids: Switch.sources(route(ids), exclude=np.asarray(ids)[:, :1].astype(np.int64))
  conds = {
    Cond.SINK_ON: Condition(models.null, Switch.sources),
    Cond.SWITCHED_OFF: Condition(models.null, off),
  }
  if prompt_routes is not None:
    router_lib.fallback(fallback)  # validates the policy before any scoring
    conds[Cond.PROMPT_ROUTED] = PromptRouted(
      models.null, prompt_routes, lambda own: router_lib.fallback(fallback, exclude=own)
    )
  conds |= {
    Cond.ALL_OFF: Condition(models.null, lambda ids: Switch.sources(route(ids), exclude=forget)),
    Cond.BACKBONE: Condition(models.null, lambda ids: Switch.backbone()),
    Cond.EXPECTED: Condition(models.null, lambda ids: Switch.expected(exclude=forget)),
  }
  if models.oracle is not None:
    conds[Cond.ORACLE] = Condition(models.oracle, off)
  if models.plain is not None:
    conds[Cond.PLAIN] = Condition(models.plain, lambda ids: Switch.backbone())
  return conds


def truth_ratios(
  cond: Condition | PromptRouted, probes: Sequence[Probe], desc: str | None = None
) -> np.ndarray:
  return scores.truth_ratio(cond.option_nll(probes, desc))


def _taxonomy(probes: Sequence[Probe], oracle_ratios: np.ndarray | None) -> list[str]:
  """Shared stays shared; article-specific facts are unique if the oracle cannot tell them."""
  if oracle_ratios is None:
    return [p.kind for p in probes]
  return [
    p.kind if p.kind == FactSet.SHARED else (FactSet.UNIQUE if r <= 1.0 else FactSet.INFERRED).value
    for p, r in zip(probes, oracle_ratios)
  ]


def retained_probes(probes, forget_set, limit: int, seed: int) -> list[Probe]:
  """The probes of sources not forgotten, a seeded sample of at most `limit`."""
  keep = [p for p in probes if p.source_id not in forget_set]
  if len(keep) > limit:
    idx = np.random.default_rng(seed).choice(len(keep), limit, replace=False)
    keep = [keep[i] for i in sorted(idx)]
  return keep


def _probes_of(probes: Sequence[Probe], sources: set[int]) -> list[Probe]:
  return [p for p in probes if p.source_id in sources]


def _docs_of(docs: Sequence[Document], sources: set[int]) -> list[Document]:
  return [d for d in docs if d.source_id in sources]


def _capability(models: Models, heldout, router, forget_set, cfg, log) -> dict:
  """Held-out loss per token: text no model trained on."""
  log(f"held-out loss on {len(heldout)} documents")
  rows = pipeline.document_rows(models.null.tokenizer, heldout, cfg.seq_len)
  nearest = router.route_docs(heldout, forget_set)
  route = np.vectorize(lambda s: nearest[int(s)], otypes=[np.int64])
  out = {
    "null (routed)": unlearning.heldout_nll(
      models.null, rows, switch_for=lambda ids: Switch.sources(route(ids))
    ),
    "null (backbone only)": unlearning.heldout_nll(
      models.null, rows, switch_for=lambda ids: Switch.backbone()
    ),
    "null (expected)": unlearning.heldout_nll(
      models.null, rows, switch_for=lambda ids: Switch.expected()
    ),
  }
  if models.plain is not None:
    out["plain"] = unlearning.heldout_nll(models.plain, rows)
  out["tokens"] = float(rows["weights"].sum())
  return out


def _baselines(
  models: Models, docs, forget_set, rows_forget, probes, kinds, oracle_ratios, retained, cfg, log
) -> dict:
  """GA, GD and NPO on the plain transformer and on the NULL with its sinks on."""
  retain_docs = [d for d in docs if d.source_id not in forget_set]
  rng = np.random.default_rng(cfg.seed)
  retain_docs = [retain_docs[i] for i in rng.permutation(len(retain_docs))[: cfg.retain_docs]]
  rows_retain = pipeline.document_rows(models.null.tokenizer, retain_docs, cfg.seq_len)
  out = {}
  targets = [("plain", models.plain), ("null", models.null)]
  for model_name, run in [(n, r) for n, r in targets if r is not None]:
    for method in cfg.unlearn_methods:
      name = f"{model_name}+{method}"
      log(f"unlearning: {name} ({cfg.unlearn_steps} steps at lr {cfg.unlearn_lr})")
      params = unlearning.unlearn(
        run,
        rows_forget,
        method=method,
        steps=cfg.unlearn_steps,
        lr=cfg.unlearn_lr,
        batch_size=cfg.unlearn_batch,
        rows_retain=rows_retain if method != "ga" else None,
        beta=cfg.npo_beta,
        seed=cfg.seed,
      )
      cond = Condition(run, Switch.sources, params)
      r = truth_ratios(cond, probes, desc=name)
      with_oracle = {} if oracle_ratios is None else {Cond.ORACLE: oracle_ratios}
      rep = dict(summarize({name: r, **with_oracle}, kinds)[name])
      if retained:
        rep["retained"] = Summary.of(truth_ratios(cond, retained))
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


def _relearning(models, conds, unlearned, docs, forget_set, probes, cfg, log) -> Relearning:
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
  attacked = {name: conds[name] for name in (Cond.SWITCHED_OFF, Cond.ORACLE) if name in conds}
  for name, u in unlearned.items():
    if name.startswith("plain+") or (models.plain is None and name.startswith("null+")):
      attacked[name] = u["condition"]
  steps = sorted(set(cfg.relearn_steps))
  curves = {}
  for name, cond in attacked.items():
    log(f"relearning attack on {name}: {steps[-1]} steps at lr {cfg.relearn_lr}")
    snaps = unlearning.finetune_snapshots(
      cond.run,
      rows_train,
      step_counts=[0, *steps],
      lr=cfg.relearn_lr,
      batch_size=cfg.relearn_batch,
      switch_for=cond.switch_for_sources,
      params=cond.params,
      seed=cfg.seed,
    )
    curve = {"steps": [0, *steps], "loss": [], "median_ratio": []}
    for k in curve["steps"]:
      c = dataclasses.replace(cond, params=snaps[k])
      curve["loss"].append(
        unlearning.heldout_nll(
          cond.run, rows_test, params=snaps[k], switch_for=cond.switch_for_sources
        )
      )
      curve["median_ratio"].append(float(np.median(truth_ratios(c, held_probes))))
    curves[name] = curve
  before = {}  # the facts as each model knew them before any post-hoc unlearning
  for base_name in {name.split("+")[0] for name in curves if "+" in name}:
    base = models.plain if base_name == "plain" else models.null
    before[base_name] = float(np.median(truth_ratios(Condition(base, Switch.sources), held_probes)))
  return Relearning(curves, before, len(held_probes), float(rows_test["weights"].sum()))


def _extraction(conds, unlearned, docs, forget_set, cfg, log) -> dict:
  """Verbatim extraction and the adversarial compression ratio of the forgotten text."""
  forgotten_docs = _docs_of(docs, forget_set)
  targets = {
    name: conds[name] for name in (Cond.SINK_ON, Cond.SWITCHED_OFF, Cond.ORACLE) if name in conds
  }
  for name, u in unlearned.items():
    if name.endswith("+npo"):
      targets[name] = u["condition"]
  out = {}
  for name, cond in targets.items():
    log(f"extraction attacks on {name}")
    ids = np.asarray([d.source_id for d in forgotten_docs], np.int64)
    verb = extraction.verbatim_extraction(
      cond.run,
      forgotten_docs,
      lambda idx, c=cond, ids=ids: c.switch_for_sources(ids[idx][:, None]),
      prefix_tokens=cfg.extraction_prefix,
      continuation_tokens=cfg.extraction_continuation,
      max_samples=cfg.extraction_samples,
      params=cond.params,
    )
    acrs = []
    for doc in _acr_targets(forgotten_docs, cfg.acr_targets):
      tokens = cond.run.tokenizer.encode(doc.text)[: cfg.acr_target_len]
      switch = cond.switch_for_sources(np.asarray([[doc.source_id]], np.int64))
      acrs.append(
        extraction.adversarial_compression_ratio(
          cond.run,
          tokens,
          switch,
          start_len=min(5, len(tokens)),
          params=cond.params,
          steps=cfg.gcg_steps,
          top_k=cfg.gcg_top_k,
          batch_size=cfg.gcg_batch,
          seed=cfg.seed,
        )
      )
    out[name] = {
      "exact_match": verb["exact_match"],
      "rouge_l": verb["rouge_l"],
      "rouge_l_recall": verb["rouge_l_recall"],
      "samples": verb["num_samples"],
      "acr_mean": float(np.mean([a["acr"] for a in acrs])) if acrs else float("nan"),
      "acr_found": [bool(a["found"]) for a in acrs],
      "acr": [float(a["acr"]) for a in acrs],
    }
  return out


def _acr_targets(docs: Sequence[Document], n: int) -> list[Document]:
  """The first document of each forgotten source, the largest sources (a book) first."""
  size: dict[int, int] = {}
  first: dict[int, Document] = {}
  for d in docs:
    size[d.source_id] = size.get(d.source_id, 0) + len(d.text)
    first.setdefault(d.source_id, d)
  return [first[s] for s in sorted(first, key=lambda s: -size[s])][:n]
