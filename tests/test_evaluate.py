import json

import numpy as np
import pytest

from conftest import small_config
from nullearn import evaluate, inference, ledger, report, results, router, routing, scores, train
from nullearn.configs import base
from nullearn.data import factworld
from nullearn.data.records import Document, Probe
from nullearn.data.tokenizer import train_tokenizer
from nullearn.results import Cond, FactSet
from nullearn.switch import Switch


def test_router_never_returns_a_forgotten_source():
  rng = np.random.default_rng(0)
  sources = np.arange(100, 160)
  router = routing.Router(sources, routing._unit(rng.normal(size=(60, 8))))
  for _ in range(200):
    forgotten = set(rng.choice(sources, rng.integers(1, 59), replace=False).tolist())
    src = int(rng.choice(sources))
    got = router.route(src, forgotten)
    assert got not in forgotten and got in set(sources.tolist())
    if src not in forgotten:
      assert got == src  # a surviving source is served by itself
  near = routing.Router(np.array([1, 2, 3]), np.array([[1.0, 0], [0.99, 0.14], [0, 1.0]]))
  assert near.route(1, {1}) == 2 and near.route(1, {1, 2}) == 3
  with pytest.raises(ValueError, match="every source is forgotten"):
    near.route(1, {1, 2, 3})


def test_taxonomy_uses_the_oracle():
  p = lambda kind: Probe(0, "The capital of Vask is", "Tarn", ("A", "B", "C"), kind)
  probes = [p("unique"), p("unique"), p("shared"), p("inferred")]
  got = evaluate._taxonomy(probes, np.array([0.7, 1.8, 0.2, 0.9]))
  assert got == ["unique", "inferred", "shared", "unique"]
  assert evaluate._taxonomy(probes, None) == ["unique", "unique", "shared", "inferred"]


def test_article_row_joins_the_oracle_split():
  """Forget Quality on unique+inferred together, not only within the oracle-drawn cut."""
  rng = np.random.default_rng(0)
  oracle = np.exp(rng.normal(0, 1, 300))
  same = np.exp(rng.normal(0, 1, 300))  # another draw from the oracle's distribution
  kinds = evaluate._taxonomy([Probe(0, "p", "a", ("b", "c", "d"), "unique")] * 300, oracle)
  rows = results.summarize({Cond.ORACLE: oracle, Cond.SWITCHED_OFF: same}, kinds)
  off, orc = rows[Cond.SWITCHED_OFF], rows[Cond.ORACLE]
  assert off[FactSet.ARTICLE].n == 300
  assert orc[FactSet.UNIQUE].frac_above_1 == 0.0  # the cut
  assert off[FactSet.ARTICLE].forget_quality > 0.05
  assert off[FactSet.UNIQUE].forget_quality < 0.05  # same distribution, split by the oracle
  claims = results.claims(
    {Cond.SWITCHED_OFF: off, Cond.SINK_ON: off, Cond.ORACLE: orc}, base.get_config().eval.claims
  )
  article = next(c for c in claims if "article-specific facts (unique" in c.claim)
  assert article.holds and article.value == off[FactSet.ARTICLE].forget_quality


def test_claims_read_their_thresholds_from_the_config():
  r = np.exp(np.random.default_rng(1).normal(1.0, 0.5, 50))  # median about e
  rows = results.summarize({Cond.SINK_ON: r}, ["unique"] * 50)
  t = base.get_config().eval.claims
  (known,) = results.claims(rows, t)
  assert known.holds and known.threshold == 2.0
  t.sink_on_median = 10.0
  (known,) = results.claims(rows, t)
  assert not known.holds and known.threshold == 10.0


def test_split_halves():
  docs = [
    Document(1, "a", "One. Two. Three. Four."),
    Document(2, "b", "x"),
    Document(2, "b", "y"),
    Document(2, "b", "z"),
  ]
  first, second = evaluate.split_halves(docs)
  assert [d.text for d in first] == ["One. Three.", "x", "z"]
  assert [d.text for d in second] == ["Two. Four.", "y"]


@pytest.fixture(scope="module")
def setup(world, tokenizer, tmp_path_factory):
  """A NULL, its oracle (the same config, forgotten sources excluded) and a plain model."""
  forget = list(factworld.choose_forget_set(world, 2, seed=1))
  root = tmp_path_factory.mktemp("runs")
  for name, model, exclude in (
    ("null", {}, ()),
    ("oracle", {}, forget),
    ("plain", dict(backbone=72, pool=0), ()),
  ):
    c = small_config(**model)
    c.train.steps = 40
    c.data.exclude_sources = tuple(exclude)
    train.train(c, root / name, world.documents, tokenizer)
    tokenizer.save(root / name / "tokenizer.model")
  runs = {name: inference.load_run(root / name) for name in ("null", "oracle", "plain")}
  return evaluate.Models(**runs), forget, root


def small_eval():
  e = base.get_config().eval
  e.update(
    dict(
      seq_len=32,
      max_retained_probes=20,
      retain_docs=8,
      unlearn_steps=3,
      unlearn_batch=4,
      relearn_steps=(1, 2),
      relearn_batch=4,
      extraction_prefix=8,
      extraction_continuation=8,
      extraction_samples=4,
      acr_targets=1,
      acr_target_len=4,
      gcg_steps=2,
      gcg_top_k=8,
      gcg_batch=8,
    )
  )
  return e


@pytest.mark.slow  # ~120 s; test_cli's eval runs write the report in the default suite
def test_full_report_is_written_and_readable(setup, world, tmp_path):
  models, forget, _ = setup
  heldout = [Document(999, "Unseen", world.documents[0].text.replace("a", "o"))]
  result = evaluate.evaluate(
    models, world.documents, world.probes, forget, small_eval(), heldout=heldout, log=lambda m: None
  )
  assert set(result.conditions) == {
    Cond.SINK_ON,
    Cond.SWITCHED_OFF,
    Cond.PROMPT_ROUTED,
    Cond.ALL_OFF,
    Cond.BACKBONE,
    Cond.EXPECTED,
    Cond.ORACLE,
    Cond.PLAIN,
  }
  for f in result.forgotten:
    assert f["routed_to"] not in forget
    assert len(f["prompts_routed_to"]) == 7 and not set(f["prompts_routed_to"]) & set(forget)
  kinds = result.kinds
  assert set(kinds) <= {"unique", "inferred", "shared"} and len(kinds) == 2 * 7
  assert set(result.baselines) == {
    f"{m}+{u}" for m in ("plain", "null") for u in ("ga", "gd", "npo")
  }
  curves = result.relearning.curves
  assert set(curves) == {"switched off", "oracle", "plain+ga", "plain+gd", "plain+npo"}
  assert all(c["steps"] == [0, 1, 2] and len(c["loss"]) == 3 for c in curves.values())
  assert set(result.extraction) == {"sink on", "switched off", "oracle", "plain+npo", "null+npo"}
  assert set(result.capability) >= {"plain", "null (routed)", "null (backbone only)"}
  assert {c.claim.split(":")[0] for c in result.claims} >= {"relearning", "switched off"}
  written = report.write(result, tmp_path / "report")
  names = {p.name for p in written}
  assert names == {"report.json", "report.md", "truth_ratios.png", "relearning.png"}
  loaded = json.loads((tmp_path / "report" / "report.json").read_text())
  assert loaded["conditions"]["oracle"]["unique"]["n"] == kinds.count("unique")
  assert loaded["ratios"]["switched off"] == result.ratios[Cond.SWITCHED_OFF]
  # TOFU's orientation, per probe index, as open-unlearning stores it
  tofu = loaded["tofu"]["switched off"]["forget_truth_ratio"]
  assert list(tofu["value_by_index"]) == [str(i) for i in range(len(kinds))]
  for i, r in enumerate(result.ratios[Cond.SWITCHED_OFF]):
    assert tofu["value_by_index"][str(i)]["score"] == pytest.approx(1 / r)
  assert loaded["tofu"]["oracle"]["forget_quality"]["agg_value"] == pytest.approx(1.0)
  extracted = loaded["extraction"]["sink on"]
  assert 0.0 <= extracted["rouge_l"] <= 1.0 and 0.0 <= extracted["rouge_l_recall"] <= 1.0
  md = (tmp_path / "report" / "report.md").read_text()
  for heading in (
    "## Truth Ratio",
    "### In TOFU's orientation",
    "## Post-hoc",
    "## Relearning",
    "## Extraction",
    "## Claims",
    "## Forgetting budget",
  ):
    assert heading in md
  assert "ROUGE-L recall" in md and "TOFU's retain-set Truth Ratio" in md
  assert all((tmp_path / "report" / n).stat().st_size > 5000 for n in names if n.endswith(".png"))


def test_each_condition_scores_its_own_switch(setup, world):
  """Every condition's ratios are the probes scored under exactly its model and switch.

  Recomputed here one probe at a time from the model itself, so a switch that
  ignored `exclude`, routed to the wrong source, or scored the wrong model fails.
  """
  models, forget, _ = setup
  cfg = small_eval()
  cfg.sections = ()
  result = evaluate.evaluate(models, world.documents, world.probes, forget, cfg, log=lambda m: None)
  routed = {f["id"]: f["routed_to"] for f in result.forgotten}
  probes = [p for p in world.probes if p.source_id in set(forget)]
  index = router.PromptRouter.in_memory(router.source_texts(world.documents, 100))
  prompt_routed = {p.prompt: index.route(p.prompt, forget).source for p in probes}
  assert None not in prompt_routed.values()
  expected = {
    Cond.SINK_ON: (models.null, lambda p: Switch.sources(p.source_id)),
    Cond.SWITCHED_OFF: (
      models.null,
      lambda p: Switch.sources(routed[p.source_id], exclude=[p.source_id]),
    ),
    Cond.PROMPT_ROUTED: (
      models.null,
      lambda p: Switch.sources(prompt_routed[p.prompt], exclude=[p.source_id]),
    ),
    Cond.ALL_OFF: (models.null, lambda p: Switch.sources(routed[p.source_id], exclude=forget)),
    Cond.BACKBONE: (models.null, lambda p: Switch.backbone()),
    Cond.EXPECTED: (models.null, lambda p: Switch.expected(exclude=forget)),
    Cond.ORACLE: (
      models.oracle,
      lambda p: Switch.sources(routed[p.source_id], exclude=[p.source_id]),
    ),
    Cond.PLAIN: (models.plain, lambda p: Switch.backbone()),
  }
  for cond, (run, switch_of) in expected.items():
    want = [
      scores.truth_ratio(inference.option_nll(run, [p], lambda idx, p=p, s=switch_of: s(p)))[0]
      for p in probes
    ]
    np.testing.assert_allclose(result.ratios[cond], want, rtol=2e-4, err_msg=cond)
  # the conditions differ where their switches differ: nothing collapsed onto another
  assert not np.allclose(result.ratios[Cond.SINK_ON], result.ratios[Cond.SWITCHED_OFF])
  assert not np.allclose(result.ratios[Cond.SWITCHED_OFF], result.ratios[Cond.ORACLE])
  assert not np.allclose(result.ratios[Cond.BACKBONE], result.ratios[Cond.EXPECTED])


def test_prompts_nothing_matches_are_served_by_the_fallback(setup, world):
  """A prompt routed nowhere is scored under serve.fallback, own sinks excluded."""
  models, forget, _ = setup
  probes = [p for p in world.probes if p.source_id in set(forget)][:6]
  routes = {p.prompt: (None if i % 2 else 1) for i, p in enumerate(probes)}
  for fallback, switch_of in (
    ("expected", lambda p: Switch.expected(exclude=[p.source_id])),
    ("backbone", lambda p: Switch.backbone()),
  ):
    cond = evaluate.conditions(models, {}, forget, routes, fallback)[Cond.PROMPT_ROUTED]
    want = [
      scores.truth_ratio(
        inference.option_nll(
          models.null,
          [p],
          lambda idx, p=p, switch_of=switch_of: (
            Switch.sources(1, exclude=[p.source_id]) if routes[p.prompt] else switch_of(p)
          ),
        )
      )[0]
      for p in probes
    ]
    np.testing.assert_allclose(evaluate.truth_ratios(cond, probes), want, rtol=2e-4)
  with pytest.raises(ValueError, match="serve.fallback"):
    evaluate.conditions(models, {}, forget, routes, "nearest")


def test_forgetting_nothing_or_unknown_sources_is_an_error(setup, world):
  models, _, _ = setup
  gone = ledger.Ledger((ledger.Entry(1, "a", "r", "t", "u"),))
  ledgered = evaluate.Models(inference.with_ledger(models.null, gone))
  with pytest.raises(ValueError, match="apply_ledger=False"):
    evaluate.evaluate(ledgered, world.documents, world.probes, [1], small_eval())
  with pytest.raises(ValueError, match="no sources to forget"):
    evaluate.evaluate(models, world.documents, world.probes, [], small_eval())
  with pytest.raises(ValueError, match="have no documents"):
    evaluate.evaluate(models, world.documents, world.probes, [12345], small_eval())


def test_validate_accepts_true_controls(setup):
  models, forget, _ = setup
  assert evaluate.validate(models, forget) == []


def test_validate_refuses_an_oracle_that_saw_the_forgotten_sources(setup):
  models, forget, _ = setup
  not_an_oracle = evaluate.Models(models.null, oracle=models.null)
  (problem,) = evaluate.validate(not_an_oracle, forget)
  assert problem.startswith("--oracle: was trained on forgotten sources")
  assert str(sorted(forget)[0]) in problem


def test_validate_refuses_another_tokenizer_or_architecture(setup, world, tmp_path):
  models, forget, root = setup
  c = small_config(d_model=48)  # another width
  c.train.steps = 2
  c.data.exclude_sources = tuple(forget)
  other_tok = train_tokenizer([d.text.upper() for d in world.documents], 512)
  train.train(c, tmp_path / "other", world.documents, other_tok)
  other_tok.save(tmp_path / "other" / "tokenizer.model")
  problems = evaluate.validate(
    evaluate.Models(models.null, oracle=inference.load_run(tmp_path / "other")), forget
  )
  assert any(p.startswith("--oracle: tokenizer") for p in problems)
  assert any(p.startswith("--oracle: architecture") and "d_model 48 vs 32" in p for p in problems)
  wrong_plain = evaluate.Models(models.null, plain=models.oracle)  # has sinks, saw less data
  problems = evaluate.validate(wrong_plain, forget)
  assert any("pool 0" in p for p in problems)
  assert any("excluded sources" in p for p in problems)
