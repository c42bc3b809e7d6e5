"""The corpus a config names: the fact world, the user's JSONL files, or a TFDS dataset.

Small corpora are held in memory; a TFDS corpus (all of Wikipedia) stays a
random-access source that Grain reads lazily, so nothing here walks it whole:
naming, reading and sampling sources cost the same at 6.4M articles as at 1k.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import pathlib
from collections.abc import Iterable, Sequence

import grain
import ml_collections
import numpy as np

from nullearn.data import clusters, factworld, records
from nullearn.data.records import Document, Probe
from nullearn.data.source_index import SourceIndex, UnknownSourceError


@dataclasses.dataclass(frozen=True)
class Corpus:
  documents: Sequence[Document]  # a tuple in memory, or a lazy random-access source
  probes: tuple[Probe, ...] = ()
  clustering: dict | None = None  # data.sources=clusters:K: how the sources were made

  @property
  def in_memory(self) -> bool:
    return isinstance(self.documents, tuple)

  @property
  def names(self) -> dict[int, str]:
    if not self.in_memory:
      raise ValueError("a TFDS corpus is not held in memory; look names up in its title index")
    return records.sources_by_id(self.documents)

  @property
  def fingerprint(self) -> str:
    """Identifies the text a run was trained on, so a resume or an oracle on other data is caught.

    In memory: a hash of every document. A lazy source names itself (its
    dataset, version and size) through its own `fingerprint`.
    """
    if not self.in_memory:
      own = getattr(self.documents, "fingerprint", None)
      return own or f"{type(self.documents).__name__}:{len(self.documents)}"
    h = hashlib.sha256()
    for d in self.documents:
      h.update(f"{d.source_id}\x00{d.source}\x00{d.text}\x01".encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TrainingSet:
  """What a run trains on: the corpus minus the sources its config leaves out.

  Only `training_set` makes one, so every run (an oracle, a NULL with held-out
  sources) sees exactly what its config says, whoever calls the trainer.
  """

  documents: Sequence[Document]
  corpus_fingerprint: str
  excluded: tuple[int, ...]  # data.exclude_sources: the sources an oracle never saw
  heldout: tuple[int, ...]  # eval.heldout_sources: text for held-out loss, never trained on
  clustering: dict | None = None  # the corpus's clustering into sources, if it has one

  def provenance(self) -> dict:
    out = {
      "corpus": self.corpus_fingerprint,
      "excluded": list(self.excluded),
      "heldout": list(self.heldout),
    }
    if self.clustering is not None:
      out["sources"] = self.clustering
    return out


def training_set(
  corpus: Corpus | Sequence[Document], config: ml_collections.ConfigDict
) -> TrainingSet:
  """The corpus minus `data.exclude_sources` and `eval.heldout_sources` (ids or names)."""
  if not isinstance(corpus, Corpus):
    corpus = Corpus(tuple(corpus) if isinstance(corpus, list) else corpus)
  excluded = tuple(sorted(set(resolve_sources(corpus, config.data.exclude_sources))))
  heldout = tuple(sorted(set(resolve_sources(corpus, config.eval.heldout_sources))))
  docs = _without(corpus.documents, set(excluded) | set(heldout))
  if corpus.in_memory and not docs:
    raise ValueError(
      "no documents left to train on: the corpus is empty or every source is excluded or held out"
    )
  return TrainingSet(docs, corpus.fingerprint, excluded, heldout, corpus.clustering)


def load(config: ml_collections.ConfigDict) -> Corpus:
  spec = config.data.corpus
  k = clusters.num_clusters(config.data.get("sources", ""))
  if k is not None:
    return _clustered(config, k)
  if spec == "factworld":
    world = factworld.generate(factworld.FactWorldConfig.from_config(config))
    return Corpus(world.documents, world.probes)
  if spec.startswith("tfds:"):
    from nullearn.data import wikipedia

    return Corpus(
      wikipedia.WikipediaSource(
        spec.removeprefix("tfds:"),
        data_dir=config.data.get("tfds_data_dir") or None,
        index=config.data.get("title_index") or None,
      )
    )
  path = pathlib.Path(spec)
  if path.suffix == ".jsonl":
    docs = tuple(records.read_documents(path))
    sources = {d.source_id for d in docs}
    probes = tuple(records.read_probes(config.data.probes, sources)) if config.data.probes else ()
    return Corpus(docs, probes)
  raise ValueError(
    f"unknown corpus {spec!r}: use 'factworld', a documents .jsonl file or 'tfds:<name>/<config>'"
  )


def _clustered(config: ml_collections.ConfigDict, k: int) -> Corpus:
  """A documents .jsonl whose sources are `k` clusters of its text (any given ids ignored)."""
  path = pathlib.Path(config.data.corpus)
  if path.suffix != ".jsonl":
    raise ValueError(
      f"data.sources: clusters:{k} groups a documents .jsonl file; "
      f"data.corpus is {config.data.corpus!r}"
    )
  if config.data.probes:
    raise ValueError(
      "data.probes: probes name their sources, which clusters:K replaces; "
      "leave it empty (eval builds cloze probes from the text)"
    )
  texts = records.read_texts(path)
  made = clusters.cluster(texts, k, config.data.cluster_seed)
  return Corpus(made.documents(texts), clustering=made.provenance())


def check_clustering(corpus: Corpus, meta: dict) -> None:
  """Refuses a corpus whose sources are not the clusters the run was trained on."""
  recorded = meta.get("data", {}).get("sources")
  if recorded != corpus.clustering:
    raise ValueError(
      f"data.sources: the corpus's sources ({corpus.clustering}) are not the "
      f"ones the run was trained on ({recorded})"
    )


def resolve_sources(corpus: Corpus, specs: Iterable[int | str]) -> list[int]:
  """Source ids for ids or names, with a clear error for anything not in the corpus."""
  specs = [str(s).strip() for s in specs]
  if not specs:
    return []
  if not corpus.in_memory:
    return [_resolve_lazy(corpus, s) for s in specs]
  names = corpus.names
  by_name = {name: sid for sid, name in names.items()}
  out = []
  for text in specs:
    if text.lstrip("-").isdigit():
      sid = records.check_source_id(int(text))
      if sid not in names:
        raise ValueError(f"source id {sid} is not in the corpus ({len(names)} sources)")
    elif text in by_name:
      sid = by_name[text]
    else:
      close = difflib.get_close_matches(text, list(by_name), n=3)
      hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
      raise ValueError(f"unknown source {text!r}{hint}")
    out.append(sid)
  return out


def _resolve_lazy(corpus: Corpus, text: str) -> int:
  """A page id or a title, through the source index (binary searches, no walk).

  Wikipedia has numeric titles ("1984"): a number that is both a page id and a
  title is refused, and `id:1984` or `title:1984` says which is meant.
  """
  index = corpus.documents.index
  if text.startswith("title:"):
    return index.lookup(text.removeprefix("title:"))
  if text.startswith("id:"):
    return _page_id(index, text.removeprefix("id:"))
  if not text.lstrip("-").isdigit():
    return index.lookup(text)
  try:
    titled = index.lookup(text)
  except UnknownSourceError:
    return _page_id(index, text)
  if int(text) in index:
    raise ValueError(
      f"{text!r} is both a page id and the title of page {titled}: write id:{text} or title:{text}"
    )
  return titled


def _page_id(index: SourceIndex, text: str) -> int:
  if not text.lstrip("-").isdigit():
    raise ValueError(f"{text!r} is not a page id")
  sid = records.check_source_id(int(text))
  index.positions([sid])  # raises if no article has this page id
  return sid


def documents_of(corpus: Corpus, source_ids: Iterable[int]) -> list[Document]:
  """The documents of these sources only; a lazy corpus reads just their records."""
  source_ids = list(source_ids)
  if not corpus.in_memory:
    return corpus.documents.by_ids(source_ids)
  wanted = set(source_ids)
  docs = [d for d in corpus.documents if d.source_id in wanted]
  missing = wanted - {d.source_id for d in docs}
  if missing:
    raise ValueError(f"source id {min(missing)} is not in the corpus")
  return docs


def sample_sources(corpus: Corpus, n: int, seed: int, exclude: Iterable[int] = ()) -> list[int]:
  """`n` distinct source ids drawn uniformly (all if fewer), none of `exclude`, sorted:
  the retained sources an evaluation scores. A lazy corpus draws from its index."""
  if not corpus.in_memory:
    return corpus.documents.index.sample(n, seed, exclude)
  ids = sorted({d.source_id for d in corpus.documents} - set(exclude))
  picks = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
  return sorted(ids[i] for i in picks)


def evaluation_documents(
  corpus: Corpus, forget: Sequence[int], heldout: Iterable[int], *, retained: int, seed: int
) -> tuple[list[Document], list[Document]]:
  """(documents an evaluation reads, held-out documents).

  In memory: every document but the held-out ones. Lazy (all of Wikipedia): the
  forgotten sources and a seeded sample of `retained` others only, so memory
  and time do not grow with the corpus.
  """
  heldout = set(heldout)
  if corpus.in_memory:
    return (
      [d for d in corpus.documents if d.source_id not in heldout],
      [d for d in corpus.documents if d.source_id in heldout],
    )
  sample = sample_sources(corpus, retained, seed, exclude=set(forget) | heldout)
  return documents_of(corpus, [*forget, *sample]), documents_of(corpus, sorted(heldout))


def _without(docs: Sequence[Document], exclude: Iterable[int]) -> Sequence[Document]:
  """The corpus minus some sources; a lazy corpus stays lazy (filtered as it is read)."""
  gone = frozenset(exclude)
  if isinstance(docs, (tuple, list)):
    return tuple(d for d in docs if d.source_id not in gone)
  ds = docs if isinstance(docs, grain.MapDataset) else grain.MapDataset.source(docs)
  return ds.filter(lambda d: d.source_id not in gone) if gone else ds


def tokenizer_texts(corpus: Corpus, config: ml_collections.ConfigDict) -> Iterable[str]:
  """All texts of a corpus in memory; a seeded sample of a lazy one."""
  if corpus.in_memory:
    return (d.text for d in corpus.documents)
  from nullearn.data import wikipedia

  return wikipedia.sample_texts(corpus.documents, config.tokenizer.sample_docs, config.seed)
