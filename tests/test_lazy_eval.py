"""`nullearn eval` on a lazy corpus (a TFDS Wikipedia): routed by the run's saved router over the
whole corpus, reading only the forgotten articles, a seeded sample and the routing neighbours.

The datasets are synthetic dumps prepared by the real `nullearn prepare wikipedia`.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_wikipedia import _config, _counting_reads, _read_positions
from wikipedia_articles import prepare

from nullearn import configs, evaluate, inference, routing
from nullearn import router as router_lib
from nullearn.data import cloze, synthetic_wikipedia
from nullearn.data import corpus as corpus_lib

CONFIG = str(pathlib.Path(configs.__file__).parent / "wikipedia_tiny.py")
RETAINED = 5  # sampled retained articles: far fewer than the corpus, so neighbours lie outside


def nullearn(*args: str, env: dict) -> subprocess.CompletedProcess:
  """The `nullearn` command as a user types it, with TFDS_DATA_DIR in `env`."""
  command = pathlib.Path(sys.executable).parent / "nullearn"
  run = subprocess.run([str(command), *args], capture_output=True, text=True, env=env, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def _prepared(tmp_path_factory, n: int) -> pathlib.Path:
  root = tmp_path_factory.mktemp(f"dump{n}")
  synthetic_wikipedia.write_parquet(root / "parquet", n, shards=2, mean_chars=400)
  return prepare(root / "tfds", root / "parquet", "--workers=1")


def _forgotten_routed_outside_the_sample(corpus, index, count: int) -> dict[int, int]:
  """`count` articles with cloze probes whose nearest surviving source (over the whole corpus)
  is outside the sample the evaluation draws: an index over the evaluated subset cannot
  return it."""
  picks = {}
  for i in range(0, len(corpus.documents), 7):
    doc = corpus.documents[i]
    sample = corpus_lib.sample_sources(corpus, RETAINED, seed=0, exclude=[*picks, doc.source_id])
    others = corpus_lib.documents_of(corpus, sample)
    if not any(p.source_id == doc.source_id for p in cloze.make_probes([doc, *others])):
      continue
    nearest = routing.TextRouter(index, [doc], 100).route(doc.source_id, {*picks, doc.source_id})
    if nearest not in sample and nearest not in picks:
      picks[doc.source_id] = nearest
    if len(picks) == count:
      return picks
  raise AssertionError("no article is routed outside the sample")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A NULL trained for two steps on a prepared dump by the CLI, with its router."""
  data_dir = _prepared(tmp_path_factory, 600)
  workdir = tmp_path_factory.mktemp("run")
  env = {**os.environ, "TFDS_DATA_DIR": str(data_dir)}
  nullearn(
    "train",
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    "--config.train.steps=2",
    "--config.train.progress=False",
    "--config.tokenizer.sample_docs=200",
    "--config.model.vocab_size=512",
    "--config.mesh.fsdp=1",
    env=env,
  )
  nullearn("router", f"--workdir={workdir}", env=env)
  return data_dir, workdir, env


def test_eval_routes_over_the_whole_corpus_and_reads_the_neighbours(trained, tmp_path):
  data_dir, workdir, env = trained
  corpus = corpus_lib.load(_config(data_dir))
  index = router_lib.PromptRouter.load(workdir / router_lib.DIRECTORY)
  assert len(index) == len(corpus.documents)
  picks = _forgotten_routed_outside_the_sample(corpus, index, 2)
  out = tmp_path / "report"
  nullearn(
    "eval",
    f"--workdir={workdir}",
    f"--forget={','.join(map(str, picks))}",
    f"--out={out}",
    "--config.eval.sections=",
    f"--config.eval.retained_sources={RETAINED}",
    "--config.eval.max_retained_probes=16",
    env=env,
  )
  report = json.loads((out / "report.json").read_text())
  forgotten = {f["id"]: f for f in report["forgotten"]}
  assert set(forgotten) == set(picks)
  for f, nearest in picks.items():
    assert forgotten[f]["routed_to"] == nearest
    assert forgotten[f]["routed_name"] == corpus_lib.documents_of(corpus, [nearest])[0].source
    prompts = [p["prompt"] for p in report["probes"] if p["source_id"] == f]
    assert prompts and forgotten[f]["prompts_routed_to"] == [
      index.route(p, exclude=list(picks)).source for p in prompts
    ]


def test_a_lazy_eval_reads_only_the_forgotten_sampled_and_neighbouring_articles(trained):
  """No walk of the corpus and no index over it: the records read are exactly these."""
  data_dir, workdir, _ = trained
  config = _config(data_dir)
  config.eval.update(dict(sections=(), retained_sources=RETAINED, max_retained_probes=16))
  corpus = corpus_lib.load(config)
  index = router_lib.PromptRouter.load(workdir / router_lib.DIRECTORY)
  picks = _forgotten_routed_outside_the_sample(corpus, index, 2)
  run = inference.load_run(workdir, apply_ledger=False)
  one, many = _counting_reads()
  with one as read_one, many as read_many:
    report = evaluate.evaluate_corpus(
      evaluate.Models(run), corpus, list(picks), config.eval, log=lambda _: None
    )
  positions = _read_positions(read_one, read_many)
  sample = corpus_lib.sample_sources(corpus, RETAINED, seed=0, exclude=picks)
  neighbours = {f["routed_to"] for f in report.forgotten} | {
    r for f in report.forgotten for r in f["prompts_routed_to"] if r is not None
  }
  assert set(picks.values()) <= neighbours and not set(picks.values()) & set(sample)
  assert sorted(positions) == sorted(
    corpus.documents.index.positions(set(picks) | set(sample) | neighbours)
  )
  # each forgotten article, its route and its probes' routes (8 at most); the sample
  assert len(positions) <= 2 * (2 + 8) + RETAINED
