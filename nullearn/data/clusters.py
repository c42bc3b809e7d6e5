"""Sources for text that has none: documents grouped into K semantic clusters.

A NULL needs every document attributed to a source. For unlabelled text (C4 in
the NULL paper's Harry Potter model) the sources are clusters of similar
documents: here TF-IDF vectors of the words (no model, no download) grouped
by mini-batch k-means with a fixed seed, so the same corpus, K and seed give
the same sources in every process, and a run's clustering can be checked when
it resumes or is evaluated.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from nullearn.data.records import Document

_PREFIX = "clusters:"
_MAX_FEATURES = 1 << 16  # vocabulary cap: memory stays bounded on large corpora
_NAME_TERMS = 3  # a cluster is named by its heaviest centroid terms


def num_clusters(spec: str) -> int | None:
  """`data.sources`: "" (the corpus's own sources) -> None; "clusters:K" -> K."""
  if not spec:
    return None
  k = spec.removeprefix(_PREFIX)
  if not spec.startswith(_PREFIX) or not k.isdigit() or int(k) < 2:
    raise ValueError(
      f"data.sources: expected '' or 'clusters:K' with an integer K >= 2, got {spec!r}"
    )
  return int(k)


@dataclasses.dataclass(frozen=True)
class Clustering:
  """Each document's cluster, and how it was made (the run's data provenance)."""

  labels: np.ndarray  # [documents] cluster id, 0..k-1 in order of first appearance
  names: tuple[str, ...]  # per cluster: "cluster 3 (ship, river, tide)"
  k: int
  seed: int

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(self.labels.astype("<u4").tobytes()).hexdigest()[:16]

  def provenance(self) -> dict:
    return {
      "method": f"{_PREFIX}{self.k}",
      "seed": self.seed,
      "labels": self.fingerprint,
      "sizes": np.bincount(self.labels, minlength=self.k).tolist(),
    }

  def documents(self, texts: Sequence[str]) -> tuple[Document, ...]:
    return tuple(Document(int(c), self.names[c], t) for c, t in zip(self.labels, texts))


def cluster(texts: Sequence[str], k: int, seed: int) -> Clustering:
  """TF-IDF (sublinear, English stop words dropped) + mini-batch k-means into `k` clusters.

  Labels are renumbered by first appearance, so ids do not depend on k-means'
  arbitrary numbering; every cluster keeps at least one document.
  """
  from sklearn.cluster import MiniBatchKMeans
  from sklearn.feature_extraction.text import TfidfVectorizer

  if not 2 <= k <= len(texts):
    raise ValueError(
      f"data.sources: clusters:{k} needs between 2 and {len(texts)} clusters "
      f"(the corpus has {len(texts)} documents)"
    )
  vectorizer = TfidfVectorizer(
    sublinear_tf=True, stop_words="english", max_features=_MAX_FEATURES, dtype=np.float32
  )
  try:
    x = vectorizer.fit_transform(texts)
  except ValueError as e:  # only stop words, or no words at all
    raise ValueError(f"data.sources: cannot cluster this text ({e})") from e
  kmeans = MiniBatchKMeans(
    n_clusters=k, random_state=seed, n_init=3, batch_size=min(1024, len(texts))
  )
  raw = kmeans.fit_predict(x)
  used, first = np.unique(raw, return_index=True)
  if len(used) < k:
    raise ValueError(f"data.sources: only {len(used)} of {k} clusters got documents; ask for fewer")
  order = used[np.argsort(first)]  # k-means' ids in order of first appearance
  renumber = np.empty(k, np.int64)
  renumber[order] = np.arange(k)
  terms = vectorizer.get_feature_names_out()
  top = np.argsort(-kmeans.cluster_centers_[order], axis=1)[:, :_NAME_TERMS]
  names = tuple(f"cluster {i} ({', '.join(terms[t])})" for i, t in enumerate(top))
  return Clustering(renumber[raw], names, k, seed)
