"""The corpus a config names: the fact world, the user's JSONL files, or a TFDS dataset.

Small corpora are held in memory; a TFDS corpus (all of Wikipedia) stays a
random-access source that Grain reads lazily, so nothing here walks it whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
from typing import Iterable, Sequence

import grain
import ml_collections

from nullearn.data import factworld, records
from nullearn.data.records import Document, Probe


@dataclasses.dataclass(frozen=True)
class Corpus:
  documents: Sequence[Document]  # a tuple in memory, or a lazy random-access source
  probes: tuple[Probe, ...] = ()
  title_index: str = ""  # a TitleIndex path resolving names in a lazy corpus

  @property
  def in_memory(self) -> bool:
    return isinstance(self.documents, tuple)

  @property
  def names(self) -> dict[int, str]:
    if not self.in_memory:
      raise ValueError("a TFDS corpus is not held in memory; look names up in its title index")
    return records.sources_by_id(self.documents)


def load(config: ml_collections.ConfigDict) -> Corpus:
  spec = config.data.corpus
  if spec == "factworld":
    world = factworld.generate(factworld.FactWorldConfig(**config.factworld.to_dict()))
    return Corpus(world.documents, world.probes)
  if spec.startswith("tfds:"):
    from nullearn.data import wikipedia  # pylint: disable=g-import-not-at-top
    source = wikipedia.WikipediaSource(spec.removeprefix("tfds:"),
                                       data_dir=config.data.get("tfds_data_dir") or None)
    return Corpus(source, title_index=config.data.get("title_index") or "")
  path = pathlib.Path(spec)
  if path.suffix == ".jsonl":
    docs = tuple(records.read_documents(path))
    probes = tuple(records.read_probes(config.data.probes)) if config.data.probes else ()
    return Corpus(docs, probes)
  raise ValueError(f"unknown corpus {spec!r}: use 'factworld', a documents .jsonl file or "
                   "'tfds:<name>/<config>'")


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
  if text.lstrip("-").isdigit():
    sid = records.check_source_id(int(text))
    if sid >= len(corpus.documents):
      raise ValueError(f"source id {sid} is not in the corpus ({len(corpus.documents)} sources)")
    return sid
  if not corpus.title_index:
    raise ValueError(f"cannot resolve the source name {text!r}: this corpus needs a title "
                     "index (`nullearn titles --config=... --out=PATH`, then "
                     "--config.data.title_index=PATH), or give source ids")
  from nullearn.data import wikipedia  # pylint: disable=g-import-not-at-top
  return wikipedia.TitleIndex.open(corpus.title_index, corpus.documents).lookup(text)


def without(docs: Sequence[Document], exclude: Iterable[int]) -> Sequence[Document]:
  """The corpus minus some sources; a lazy corpus stays lazy (filtered as it is read)."""
  gone = frozenset(exclude)
  if isinstance(docs, (tuple, list)):
    return [d for d in docs if d.source_id not in gone]
  ds = docs if isinstance(docs, grain.MapDataset) else grain.MapDataset.source(docs)
  return ds.filter(lambda d: d.source_id not in gone) if gone else ds


def tokenizer_texts(corpus: Corpus, config: ml_collections.ConfigDict) -> Iterable[str]:
  """All texts of a corpus in memory; a seeded sample of a lazy one."""
  if corpus.in_memory:
    return (d.text for d in corpus.documents)
  from nullearn.data import wikipedia  # pylint: disable=g-import-not-at-top
  return wikipedia.sample_texts(corpus.documents, config.tokenizer.sample_docs, config.seed)
