import json

import numpy as np
import pytest

from conftest import small_config
from nullearn import evaluate, inference, report, routing, train
from nullearn.configs import base
from nullearn.data import corpus as corpus_lib
from nullearn.data import factworld
from nullearn.data.records import Document, Probe


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
  kinds = np.asarray(evaluate._taxonomy([Probe(0, "p", "a", ("b", "c", "d"), "unique")] * 300,
                                        oracle))
  rows = evaluate._summaries({"oracle": oracle, "off": same}, list(kinds))
  assert rows["off"]["article"]["n"] == 300
  assert rows["oracle"]["unique"]["frac_above_1"] == 0.0  # the cut
  assert rows["off"]["article"]["forget_quality"] > 0.05
  assert rows["off"]["unique"]["forget_quality"] < 0.05  # same distribution, split by the oracle
  claims = evaluate.claims({"conditions": {"switched off": rows["off"], "sink on": rows["off"],
                                           "oracle": rows["oracle"]}})
  article = next(c for c in claims if "article-specific" in c["claim"])
  assert article["holds"] and article["value"] == rows["off"]["article"]["forget_quality"]


def test_split_halves():
  docs = [Document(1, "a", "One. Two. Three. Four."), Document(2, "b", "x"),
          Document(2, "b", "y"), Document(2, "b", "z")]
  first, second = evaluate.split_halves(docs)
  assert [d.text for d in first] == ["One. Three.", "x", "z"]
  assert [d.text for d in second] == ["Two. Four.", "y"]


@pytest.fixture(scope="module")
def setup(world, tokenizer, tmp_path_factory):
  forget = list(factworld.choose_forget_set(world, 2, seed=1))
  runs = {}
  for name, docs, model in (("null", world.documents, {}),
                            ("oracle", corpus_lib.without(world.documents, forget), {}),
                            ("plain", world.documents, dict(backbone=72, pool=0))):
    c = small_config(**model)
    c.train.steps = 40
    r = train.train(c, tmp_path_factory.mktemp(name), docs, tokenizer)
    runs[name] = inference.Run(r.setup.model_cfg, r.setup.graphdef, r.state.params, tokenizer, {})
  return evaluate.Models(**runs), forget


def small_eval():
  e = base.get_config().eval
  e.update(dict(seq_len=32, max_retained_probes=20, retain_docs=8, unlearn_steps=3,
                unlearn_batch=4, relearn_steps=(1, 2), relearn_batch=4, extraction_prefix=8,
                extraction_continuation=8, extraction_samples=4, acr_targets=1,
                acr_target_len=4, gcg_steps=2, gcg_top_k=8, gcg_batch=8))
  return e


def test_full_report_is_written_and_readable(setup, world, tmp_path):
  models, forget = setup
  heldout = [Document(999, "Unseen", world.documents[0].text.replace("a", "o"))]
  result = evaluate.evaluate(models, world.documents, world.probes, forget, small_eval(),
                             heldout=heldout, log=lambda m: None)
  assert set(result["conditions"]) == {"sink on", "switched off", "all forgotten off",
                                       "backbone only", "expected", "oracle", "plain"}
  for f in result["forgotten"]:
    assert f["routed_to"] not in forget
  kinds = result["probes"]["kinds"]
  assert set(kinds) <= {"unique", "inferred", "shared"} and len(kinds) == 2 * 7
  assert 0 <= result["conditions"]["switched off"]["all"]["forget_quality"] <= 1
  assert set(result["baselines"]) == {f"{m}+{u}" for m in ("plain", "null")
                                      for u in ("ga", "gd", "npo")}
  curves = result["relearning"]["curves"]
  assert set(curves) == {"switched off", "oracle", "plain+ga", "plain+gd", "plain+npo"}
  assert all(c["steps"] == [0, 1, 2] and len(c["loss"]) == 3 for c in curves.values())
  assert set(result["extraction"]) == {"sink on", "switched off", "oracle", "plain+npo", "null+npo"}
  assert set(result["capability"]) >= {"plain", "null (routed)", "null (backbone only)"}
  assert {c["claim"].split(":")[0] for c in result["claims"]} >= {"relearning"}
  written = report.write(result, tmp_path / "report")
  names = {p.name for p in written}
  assert names == {"report.json", "report.md", "truth_ratios.png", "relearning.png"}
  loaded = json.loads((tmp_path / "report" / "report.json").read_text())
  assert loaded["conditions"]["oracle"]["unique"]["n"] == kinds.count("unique")
  md = (tmp_path / "report" / "report.md").read_text()
  for heading in ("## Truth Ratio", "## Post-hoc", "## Relearning", "## Extraction", "## Claims"):
    assert heading in md
  assert all((tmp_path / "report" / n).stat().st_size > 5000 for n in names if n.endswith(".png"))


def test_forgetting_nothing_or_unknown_sources_is_an_error(setup, world):
  models, _ = setup
  with pytest.raises(ValueError, match="no sources to forget"):
    evaluate.evaluate(models, world.documents, world.probes, [], small_eval())
  with pytest.raises(ValueError, match="have no documents"):
    evaluate.evaluate(models, world.documents, world.probes, [12345], small_eval())
