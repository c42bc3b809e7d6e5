"""Routing a query for a forgotten source to the nearest surviving source (evaluation).

By default a source's query is its own leading words less its title's words,
routed through the serving router (`router.PromptRouter`, BM25): the same
index that routes a deployment's prompts. Alternatively a source is embedded by the model's own
backbone-only hidden states, mean-pooled over its text (no other model
needed), or by a sentence-transformer embedding of its title, as the reference
code does, and the nearest source by cosine similarity serves. Either way the
forgotten sources are never returned, and their sinks are excluded from the
serving source's mask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nullearn import router as router_lib
from nullearn.batching import padded_batches
from nullearn.data import pipeline
from nullearn.data.records import Document, sources_by_id
from nullearn.inference import Run
from nullearn.switch import Switch
from nullearn.writer import progress


@functools.partial(jax.jit, static_argnums=(0,))
def _pooled_hidden(graphdef, params, inputs_BxT, segment_ids_BxT, positions_BxT):
  h_BxTxD = nnx.merge(graphdef, params).hidden(
    inputs_BxT, segment_ids_BxT, positions_BxT, Switch.backbone()
  )
  w = (segment_ids_BxT > 0).astype(jnp.float32)[..., None]
  return jnp.sum(h_BxTxD.astype(jnp.float32) * w, axis=1), jnp.sum(w, axis=1)


def backbone_embeddings(
  run: Run,
  docs: Sequence[Document],
  *,
  seq_len: int = 128,
  max_rows_per_source: int = 8,
  batch_size: int = 64,
  params=None,
) -> tuple[np.ndarray, np.ndarray]:
  """(source ids [S], unit embeddings [S, D]) from backbone-only hidden states."""
  rows = pipeline.document_rows(run.tokenizer, docs, seq_len)
  ids = rows["source_ids"][:, 0].astype(np.int64)
  keep = _first_rows_per_source(ids, max_rows_per_source)
  rows = {k: v[keep] for k, v in rows.items()}
  ids = ids[keep]
  params = run.params if params is None else params
  n = len(ids)
  sums, counts = [], []
  for idx, m in progress(
    padded_batches(n, batch_size), total=-(-n // batch_size), desc="embedding sources"
  ):
    s, c = _pooled_hidden(
      run.graphdef, params, rows["inputs"][idx], rows["segment_ids"][idx], rows["positions"][idx]
    )
    sums.append(np.asarray(s)[:m])
    counts.append(np.asarray(c)[:m])
  sums, counts = np.concatenate(sums), np.concatenate(counts)
  sources = np.unique(ids)
  emb = np.stack([sums[ids == s].sum(0) / max(counts[ids == s].sum(), 1.0) for s in sources])
  return sources, _unit(emb)


def title_embeddings(docs: Sequence[Document], model_name: str = "all-MiniLM-L6-v2"):
  """(source ids, unit embeddings) of the documents' source titles: needs the `routing` extra."""
  try:
    from sentence_transformers import SentenceTransformer
  except ImportError as e:
    raise ImportError(
      "title routing needs sentence-transformers: pip install 'nullearn[routing]'"
    ) from e
  names = sources_by_id(docs)
  sources = np.asarray(sorted(names), np.int64)
  emb = SentenceTransformer(model_name).encode([names[int(s)] for s in sources])
  return sources, _unit(np.asarray(emb, np.float32))


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _first_rows_per_source(ids: np.ndarray, k: int) -> np.ndarray:
  seen: dict[int, int] = {}
  keep = []
  for i, s in enumerate(ids.tolist()):
    if seen.get(s, 0) < k:
      seen[s] = seen.get(s, 0) + 1
      keep.append(i)
  return np.asarray(keep)


Embed = Callable[[Sequence[Document]], tuple[np.ndarray, np.ndarray]]


class Router:
  """Nearest surviving source by cosine similarity of source embeddings.

  `embed(docs)` gives (source ids, unit embeddings) of other documents (held-out
  text) in the same space, for `route_docs`.
  """

  def __init__(self, sources: np.ndarray, embeddings: np.ndarray, embed: Embed | None = None):
    self.sources = np.asarray(sources, np.int64)
    self.embeddings = embeddings
    self.embed = embed
    self._row = {int(s): i for i, s in enumerate(self.sources)}

  @classmethod
  def of(cls, docs: Sequence[Document], embed: Embed) -> Router:
    return cls(*embed(docs), embed=embed)

  def route_docs(self, docs: Sequence[Document], forgotten: Collection[int]) -> dict[int, int]:
    """Each document's source (text the index never saw) -> its nearest surviving source."""
    sources, emb = self.embed(docs)
    return {int(s): self.nearest(e, forgotten) for s, e in zip(sources, emb)}

  def route(self, source_id: int, forgotten: Collection[int]) -> int:
    if source_id not in self._row:
      raise ValueError(f"source {source_id} has no embedding (it has no text in the corpus)")
    return self.nearest(self.embeddings[self._row[source_id]], forgotten)

  def nearest(self, embedding: np.ndarray, forgotten: Collection[int]) -> int:
    """The surviving source most similar to `embedding` (a unit vector)."""
    sims = self.embeddings @ embedding
    gone = np.isin(self.sources, np.fromiter(forgotten, np.int64, len(forgotten)))
    sims = np.where(gone, -np.inf, sims)
    if np.all(gone):
      raise ValueError("every source is forgotten: there is nowhere to route")
    return int(self.sources[int(np.argmax(sims))])


class TextRouter:
  """Source routing through the serving router: a source's query is its own leading words
  without its title's words. A name identifies one source, so another source sharing a
  fragment of it (a first name, a surname) is not about the same thing. On the fact world
  (50 leading words) the names sent 59% of forgotten sources out of their region; without
  them 18% (100 words: 0%)."""

  def __init__(self, index: router_lib.PromptRouter, docs: Sequence[Document], leading_words: int):
    """`index` holds `docs`' sources, indexed by `leading_words` words each."""
    self.index = index
    self.leading_words = leading_words
    self.texts = dict(_queries(docs, leading_words))

  def route(self, source_id: int, forgotten: Collection[int]) -> int:
    if source_id not in self.texts:
      raise ValueError(f"source {source_id} has no text in the corpus")
    return self._route(source_id, self.texts[source_id], forgotten)

  def route_docs(self, docs: Sequence[Document], forgotten: Collection[int]) -> dict[int, int]:
    return {s: self._route(s, text, forgotten) for s, text in _queries(docs, self.leading_words)}

  def _route(self, source_id: int, text: str, forgotten: Collection[int]) -> int:
    got = self.index.route(text, exclude=np.fromiter(forgotten, np.int64, len(forgotten)))
    if got.source is None:
      raise ValueError(
        f"source {source_id}: no surviving source shares a word with its "
        "leading words, or every source is forgotten"
      )
    return got.source


def _queries(docs: Sequence[Document], leading_words: int):
  """(source id, its leading words less its title's words) per source."""
  titles = sources_by_id(docs)
  for s, text in router_lib.source_texts(docs, leading_words):
    title = set(router_lib.words(titles[s]))
    yield s, " ".join(w for w in router_lib.words(text) if w not in title)
