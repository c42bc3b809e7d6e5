"""The corpus a config names: the embedded fact world or the user's own JSONL files."""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
from typing import Iterable, Sequence

import ml_collections

from nullearn.data import factworld, records
from nullearn.data.records import Document, Probe


@dataclasses.dataclass(frozen=True)
class Corpus:
  documents: tuple[Document, ...]
  probes: tuple[Probe, ...]
  world: factworld.FactWorld | None = None  # only for the fact world: knows the groups

  @property
  def names(self) -> dict[int, str]:
    return records.sources_by_id(self.documents)


def load(config: ml_collections.ConfigDict) -> Corpus:
  spec = config.data.corpus
  if spec == "factworld":
    world = factworld.generate(factworld.FactWorldConfig(**config.factworld.to_dict()))
    return Corpus(world.documents, world.probes, world)
  path = pathlib.Path(spec)
  if path.suffix == ".jsonl":
    docs = tuple(records.read_documents(path))
    probes = tuple(records.read_probes(config.data.probes)) if config.data.probes else ()
    return Corpus(docs, probes)
  raise ValueError(f"unknown corpus {spec!r}: use 'factworld' or a documents .jsonl file")


def resolve_sources(corpus: Corpus, specs: Iterable[int | str]) -> list[int]:
  """Source ids for ids or names, with a clear error for anything not in the corpus."""
  names = corpus.names
  by_name = {name: sid for sid, name in names.items()}
  out = []
  for spec in specs:
    text = str(spec).strip()
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


def without(docs: Sequence[Document], exclude: Iterable[int]) -> list[Document]:
  gone = set(exclude)
  return [d for d in docs if d.source_id not in gone]
