"""data.sources=clusters:K: unlabelled text grouped into K sources by its content."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import small_config
from nullearn import inference
from nullearn.data import clusters
from nullearn.data import corpus as corpus_lib

_LABELS = """
import hashlib, sys
from ml_collections import config_dict
from nullearn.configs import base
from nullearn.data import corpus
c = base.get_config()
c.data.corpus, c.data.sources, c.data.cluster_seed = sys.argv[1], "clusters:8", int(sys.argv[2])
print(",".join(str(d.source_id) for d in corpus.load(c).documents))
"""


@pytest.fixture
def unlabelled(tmp_path, world):
  """The fact world's texts with no source at all: one {"text": ...} per line."""
  path = tmp_path / "texts.jsonl"
  path.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in world.documents))
  return path


def _labels_in_new_process(path, seed):
  out = subprocess.run(
    [sys.executable, "-c", _LABELS, str(path), str(seed)],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return [int(x) for x in out.strip().split(",")]


def test_cluster_ids_are_stable_across_processes_and_depend_on_the_seed(unlabelled):
  first, second = (_labels_in_new_process(unlabelled, 0) for _ in range(2))
  assert first == second
  assert sorted(set(first)) == list(range(8))
  assert first[0] == 0  # numbered by first appearance
  assert _labels_in_new_process(unlabelled, 1) != first


def test_clusters_follow_the_text(world):
  """Documents of one fact-world region share its facts; clusters should mostly keep
  a region together (a random split into 10 would put ~1/10 of pairs together)."""
  texts = [d.text for d in world.documents]
  region = np.asarray([world.groups[d.source_id] for d in world.documents])
  made = clusters.cluster(texts, 10, seed=0)
  same_region = region[:, None] == region[None, :]
  together = made.labels[:, None] == made.labels[None, :]
  off_diagonal = ~np.eye(len(texts), dtype=bool)
  assert together[same_region & off_diagonal].mean() > 0.5
  docs = made.documents(texts)
  assert [d.text for d in docs] == texts
  assert len({d.source for d in docs}) == 10 and docs[0].source.startswith("cluster 0 (")


def test_corpus_records_its_clustering(unlabelled):
  c = small_config()
  c.data.corpus, c.data.sources = str(unlabelled), "clusters:8"
  corpus = corpus_lib.load(c)
  assert corpus.clustering["method"] == "clusters:8"
  assert sum(corpus.clustering["sizes"]) == len(corpus.documents)
  assert corpus_lib.training_set(corpus, c).provenance()["sources"] == corpus.clustering
  corpus_lib.check_clustering(corpus, {"data": {"sources": corpus.clustering}})
  c.data.cluster_seed = 1
  with pytest.raises(ValueError, match="data.sources: .*not the ones the run was trained on"):
    corpus_lib.check_clustering(corpus_lib.load(c), {"data": {"sources": corpus.clustering}})


def _nullearn(*args, cwd):
  return subprocess.run(
    [sys.executable, "-m", "nullearn.cli", *args], cwd=cwd, capture_output=True, text=True
  )


@pytest.mark.slow  # ~30 s; the cluster ids' stability across processes stays in the default suite
def test_train_on_clusters_from_the_command_line(tmp_path, unlabelled):
  from nullearn.configs import tiny

  workdir = tmp_path / "run"
  result = _nullearn(
    "train",
    f"--config={tiny.__file__}",
    f"--workdir={workdir}",
    f"--config.data.corpus={unlabelled}",
    "--config.data.sources=clusters:8",
    "--config.train.steps=2",
    "--config.train.progress=false",
    cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr
  meta = inference.load_run(workdir).meta
  assert meta["data"]["sources"]["method"] == "clusters:8"
  assert len(meta["data"]["sources"]["sizes"]) == 8


@pytest.mark.parametrize(
  "spec,match",
  [
    ("clusters:1", "K >= 2"),
    ("clusters:x", "integer K"),
    ("kmeans:8", "clusters:K"),
    ("clusters:100000", "between 2 and"),
  ],
)
def test_bad_cluster_count_is_a_one_line_cli_error(tmp_path, unlabelled, spec, match):
  result = _nullearn(
    "train",
    f"--workdir={tmp_path / 'run'}",
    f"--config.data.corpus={unlabelled}",
    f"--config.data.sources={spec}",
    "--config.train.steps=2",
    cwd=tmp_path,
  )
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("nullearn train: error: data.sources: ") and match in line, line
