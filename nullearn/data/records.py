"""The JSONL formats in which users bring their own corpora and probes.

Validation is strict and happens at load time, so a bad record fails with its
file and line instead of corrupting a training run or an evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

SOURCE_ID_MAX = 2**32 - 1  # source ids are uint32: they key masks through fold_in
FACT_KINDS = ("unique", "shared", "inferred")
MIN_DISTRACTORS = 3

PathLike = str | os.PathLike[str]
_Record = TypeVar("_Record", "Document", "Probe", "_Text")


class CorpusError(ValueError):
  """A malformed corpus or probe file; the message names file and line."""


def check_source_id(value: object) -> int:
  """Source ids key per-source state, so only exact unsigned 32-bit integers are safe."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"source_id must be an integer, got {value!r}")
  if not 0 <= value <= SOURCE_ID_MAX:
    raise ValueError(f"source_id must be in [0, {SOURCE_ID_MAX}], got {value}")
  return int(value)


def _check_str(name: str, value: object, *, nonempty: bool = False) -> None:
  if not isinstance(value, str):
    raise ValueError(f"{name} must be a string, got {type(value).__name__}")
  if nonempty and not value.strip():
    raise ValueError(f"{name} must not be empty or blank")


@dataclasses.dataclass(frozen=True)
class Document:
  """A piece of training text attributed to one source, the unit of forgetting."""

  source_id: int
  source: str
  text: str

  def __post_init__(self) -> None:
    object.__setattr__(self, "source_id", check_source_id(self.source_id))
    _check_str("source", self.source, nonempty=True)
    _check_str("text", self.text)


@dataclasses.dataclass(frozen=True)
class Probe:
  """A multiple-choice cloze question about one fact, scored by comparing answer likelihoods."""

  source_id: int
  prompt: str
  answer: str
  distractors: tuple[str, ...]
  kind: str

  def __post_init__(self) -> None:
    object.__setattr__(self, "source_id", check_source_id(self.source_id))
    _check_str("prompt", self.prompt, nonempty=True)
    if self.prompt[-1].isspace():
      raise ValueError("prompt must not end with whitespace: the answer follows after one space")
    _check_str("answer", self.answer, nonempty=True)
    object.__setattr__(self, "distractors", _checked_distractors(self.distractors, self.answer))
    if self.kind not in FACT_KINDS:
      raise ValueError(f"kind must be one of {FACT_KINDS}, got {self.kind!r}")


def _checked_distractors(distractors: object, answer: str) -> tuple[str, ...]:
  if not isinstance(distractors, (list, tuple)):
    raise ValueError(f"distractors must be a list of strings, got {type(distractors).__name__}")
  for d in distractors:
    _check_str("each distractor", d, nonempty=True)
  if len(distractors) < MIN_DISTRACTORS:
    raise ValueError(f"need at least {MIN_DISTRACTORS} distractors, got {len(distractors)}")
  if len(set(distractors)) != len(distractors):
    raise ValueError(f"distractors must be distinct, got {list(distractors)}")
  if answer in distractors:
    raise ValueError(f"the answer {answer!r} is among the distractors")
  return tuple(distractors)


def sources_by_id(docs: Iterable[Document]) -> dict[int, str]:
  """A source may span many documents, but its id and name must agree everywhere,
  or forgetting by id and reporting by name would disagree about what was forgotten."""
  names: dict[int, str] = {}
  ids: dict[str, int] = {}
  for doc in docs:
    name = names.setdefault(doc.source_id, doc.source)
    if name != doc.source:
      raise ValueError(f"source_id {doc.source_id} is named both {name!r} and {doc.source!r}")
    source_id = ids.setdefault(doc.source, doc.source_id)
    if source_id != doc.source_id:
      raise ValueError(f"source {doc.source!r} has ids {source_id} and {doc.source_id}")
  return names


def read_documents(path: PathLike) -> list[Document]:
  """Documents of a JSONL file; an empty file, a repeated document or a source id and
  name that disagree with an earlier line are errors naming both lines."""
  first_line: dict[tuple[int, str], int] = {}
  name_of: dict[int, tuple[str, int]] = {}
  id_of: dict[str, tuple[int, int]] = {}

  def check(doc: Document, lineno: int) -> None:
    seen = first_line.setdefault((doc.source_id, doc.text), lineno)
    if seen != lineno:
      raise ValueError(f"duplicate of line {seen} (same source_id and text)")
    name, line = name_of.setdefault(doc.source_id, (doc.source, lineno))
    if name != doc.source:
      raise ValueError(
        f"source_id {doc.source_id} is named {name!r} on line {line}, {doc.source!r} here"
      )
    sid, line = id_of.setdefault(doc.source, (doc.source_id, lineno))
    if sid != doc.source_id:
      raise ValueError(
        f"source {doc.source!r} has source_id {sid} on line {line}, {doc.source_id} here"
      )

  docs = _read(path, Document, check)
  if not docs:
    raise CorpusError(f"{path}: no documents")
  return docs


@dataclasses.dataclass(frozen=True)
class _Text:
  text: str

  def __post_init__(self) -> None:
    _check_str("text", self.text)


def read_texts(path: PathLike) -> list[str]:
  """The "text" of every line of a JSONL file, other keys ignored: unlabelled text, whose
  sources a clustering assigns (`data.sources=clusters:K`)."""
  texts = [t.text for t in _read(path, _Text, lambda t, lineno: None)]
  if not texts:
    raise CorpusError(f"{path}: no documents")
  return texts


def write_documents(path: PathLike, docs: Iterable[Document]) -> None:
  _write(path, docs)


def read_probes(path: PathLike, sources: Collection[int] | None = None) -> list[Probe]:
  """Probes of a JSONL file; with `sources`, a probe of any other source is an error."""

  def check(probe: Probe, lineno: int) -> None:
    del lineno
    if sources is not None and probe.source_id not in sources:
      raise ValueError(f"source_id {probe.source_id} has no documents in the corpus")

  return _read(path, Probe, check)


def write_probes(path: PathLike, probes: Iterable[Probe]) -> None:
  _write(path, probes)


def _read(
  path: PathLike, cls: type[_Record], check: Callable[[_Record, int], None]
) -> list[_Record]:
  # Binary lines, decoded one by one, so that even an encoding error names its line.
  records = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
        if line.strip():
          record = _parse(line, cls)
          check(record, lineno)
          records.append(record)
      except ValueError as e:
        raise CorpusError(f"{path}:{lineno}: {e}") from e
  return records


def _parse(line: str, cls: type[_Record]) -> _Record:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON: {e}") from e
  if not isinstance(obj, dict):
    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
  names = [f.name for f in dataclasses.fields(cls)]
  missing = [n for n in names if n not in obj]
  if missing:
    raise ValueError(f"missing key(s): {', '.join(missing)}")
  return cls(**{n: obj[n] for n in names})


def _write(path: PathLike, records: Iterable[Document | Probe]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n")
