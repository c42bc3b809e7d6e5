"""The prompt router: bm25s's scores from a streaming build; forgotten sources never returned."""

import bm25s
import numpy as np
import pytest

from nullearn import router, routing
from nullearn.data import factworld
from nullearn.switch import Switch


@pytest.fixture(scope="module")
def entries(world):
  return list(router.source_texts(world.documents, 50))


@pytest.fixture(scope="module")
def index(entries, tmp_path_factory):
  return router.PromptRouter.build(entries, tmp_path_factory.mktemp("run") / "router", chunk=7)


def test_words_are_bm25s_tokens():
  text = "The Capital of the Vask Isles is Tarn, founded in 1815 (a b)."
  assert router.words(text) == bm25s.tokenize([text], return_ids=False, show_progress=False)[0]


def test_scores_equal_bm25s_on_the_same_tokens(world, entries, index):
  """The two-pass build in chunks gives the library's own index, term for term."""
  ref = bm25s.BM25(method="lucene")
  ref.index([router.words(t) for _, t in entries], show_progress=False)
  for p in world.probes[::7]:
    np.testing.assert_allclose(
      index.scores(p.prompt), ref.get_scores(router.words(p.prompt)), rtol=1e-5, atol=1e-5
    )
  assert index.sources_S.tolist() == sorted({d.source_id for d in world.documents})


def test_an_index_is_loaded_memory_mapped(tmp_path):
  built = router.PromptRouter.build([(5, "alpha beta"), (9, "beta gamma")], tmp_path / "r")
  loaded = router.PromptRouter.load(tmp_path / "r")
  assert isinstance(loaded.bm25.scores["data"], np.memmap)
  np.testing.assert_array_equal(loaded.scores("gamma beta"), built.scores("gamma beta"))
  assert loaded.route("gamma").source == 9


def test_forgotten_sources_are_never_returned(world, index):
  rng = np.random.default_rng(0)
  ids = index.sources_S
  for p in world.probes[::5]:
    gone = rng.choice(ids, int(rng.integers(1, len(ids))), replace=False)
    got = index.top(p.prompt, 5, exclude=gone)
    assert not set(r.source for r in got) & set(gone.tolist())
    assert all(r.score > 0 for r in got)
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)
  everything = index.route(world.probes[0].prompt, exclude=ids)
  assert everything.source is None
  ledgered = index.without(ids[:20])  # a run's ledger: excluded whatever the caller asks
  for p in world.probes[::5]:
    assert not {r.source for r in ledgered.top(p.prompt, 40)} & set(ids[:20].tolist())
  assert index.top(world.probes[0].prompt, 40)  # the index itself is unchanged


def test_a_prompt_finds_its_source_and_region(world, index):
  """Its own name routes a unique prompt home; a region's name routes a shared one in region."""
  unique = [p for p in world.probes if p.kind == "unique"]
  home = np.mean([index.route(p.prompt).source == p.source_id for p in unique])
  shared = [p for p in world.probes if p.kind == "shared"]
  region = np.mean(
    [
      world.groups[index.route(p.prompt, exclude=[p.source_id]).source] == world.groups[p.source_id]
      for p in shared
    ]
  )
  assert home > 0.9 and region > 0.9, (home, region)


def test_nothing_close_falls_back(index):
  got = index.route("zzzz qqqq")  # no word in common with any source
  assert got == router.Route(None, 0.0)
  best = index.top("capital", 1)[0]
  assert index.route("capital", min_score=best.score).source is None
  assert index.route("capital", min_score=best.score / 2).source is not None
  with pytest.raises(ValueError, match="min_score"):
    index.route("capital", min_score=-1)


def test_fallback_policies():
  assert router.fallback("backbone").mode == "backbone"
  exp = router.fallback("expected", exclude=[3])
  assert exp.mode == "expected" and np.asarray(exp.exclude).tolist() == [3]
  with pytest.raises(ValueError, match="serve.fallback"):
    router.fallback("nearest")
  assert isinstance(exp, Switch)


def test_ids_in_any_order_each_once(tmp_path):
  """A lazy corpus's page ids come in record order, not sorted: rows map back to them."""
  index = router.PromptRouter.build(
    [(9, "alpha beta"), (2, "gamma"), (5, "beta delta")], tmp_path / "r", chunk=2
  )
  assert index.route("beta").source in (9, 5)
  assert index.route("beta", exclude=[9, 5]).source is None
  assert index.top("alpha beta gamma delta", 3, exclude=[2])[-1].source != 2
  with pytest.raises(ValueError, match="source 5 is indexed twice"):
    router.PromptRouter.build([(5, "a b"), (1, "c d"), (5, "e f")], tmp_path / "s", chunk=2)
  assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_a_missing_index_says_how_to_build_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="nullearn router --workdir"):
    router.PromptRouter.load(tmp_path / "router")


def test_source_routing_stays_in_the_region(world):
  """A forgotten source's query (its leading words less its own name) finds its region."""
  index = router.PromptRouter.in_memory(router.source_texts(world.documents, 100))
  text = routing.TextRouter(index, world.documents, 100)
  forget = set(factworld.choose_forget_set(world, 10, seed=0))
  for f in forget:
    got = text.route(f, forget)
    assert got not in forget and world.groups[got] == world.groups[f]
  assert text.route_docs([world.documents[4]], {4}) == {4: text.route(4, {4})}
