"""Real-text corpora: WikiText articles as sources, and a whole book as one source.

WikiText raw files are word-tokenised: " @-@ ", " @,@ " and " @.@ " stand for an
intra-word hyphen, a thousands separator and a decimal point, and rare words are
`<unk>`. Articles start at a heading line ` = Title = `; a heading line always
stands between blank lines, which tells real headings apart from formula lines
such as ` = 1 <unk> and <unk> C = ` inside an article's text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from nullearn.data.records import CorpusError, Document, PathLike

_MARKERS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
# `= Title =` is level 1, `= = Section = =` level 2 and so on; the name never starts with "=".
_HEADING = re.compile(r"(=(?: =)*) ([^=].*?) \1")


def read_articles(path: PathLike) -> list[tuple[str, str]]:
  """(title, text) per article, in file order.

  Section headings are dropped: "History", "Reception" and the like recur in
  nearly every article, so they carry nothing about their source and would only
  make unrelated articles look alike. Text lines are stripped, blank lines
  dropped, the @-@ / @,@ / @.@ markers undone and `<unk>` kept, and lines stay
  word-tokenised (" , ", " . ").
  """
  with open(path, encoding="utf-8") as f:
    lines = [_untokenise_markers(line).strip() for line in f]
  articles: list[tuple[str, list[str]]] = []
  for i, line in enumerate(lines):
    if not line:
      continue
    heading = _heading(lines, i)
    if heading is None:
      if not articles:
        raise CorpusError(f"{path}:{i + 1}: text before the first article heading ' = Title = '")
      articles[-1][1].append(line)
    elif heading[0] == 1:
      articles.append((heading[1], []))
  return [(title, "\n".join(body)) for title, body in articles]


def _heading(lines: Sequence[str], i: int) -> tuple[int, str] | None:
  """(level, name) if line i is a heading: the heading pattern between blank lines."""
  match = _HEADING.fullmatch(lines[i])
  if match is None:
    return None
  before_blank = i == 0 or not lines[i - 1]
  after_blank = i + 1 == len(lines) or not lines[i + 1]
  if not (before_blank and after_blank):
    return None
  return match.group(1).count("="), match.group(2)


def _untokenise_markers(line: str) -> str:
  for marker, char in _MARKERS:
    line = line.replace(marker, char)
  return line


def wikitext_documents(paths: Sequence[PathLike], first_id: int = 0) -> list[Document]:
  """One source per article, numbered from first_id in file order across paths.

  Several articles share a title in WikiText (mostly all-`<unk>` titles), but a
  source's name must identify it, so the n-th repeat is named "Title (n)".
  """
  if isinstance(paths, (str, os.PathLike)):
    raise TypeError(f"paths must be a sequence of paths, got the single path {paths!r}")
  articles = [article for path in paths for article in read_articles(path)]
  titles = _unique_titles([title for title, _ in articles])
  return [
    Document(first_id + i, title, text)
    for i, (title, (_, text)) in enumerate(zip(titles, articles))
  ]


def _unique_titles(titles: Sequence[str]) -> list[str]:
  used: set[str] = set()
  out = []
  for title in titles:
    name, n = title, 1
    while name in used:
      n += 1
      name = f"{title} ({n})"
    used.add(name)
    out.append(name)
  return out


def book_documents(
  path: PathLike, source_id: int, title: str, chunk_chars: int = 2000
) -> list[Document]:
  """A book as one source in many documents, so that it fits training rows.

  The book's text is normalised to its non-blank lines, stripped; chunks are
  runs of whole lines joined by "\\n", and joining the chunks by "\\n" gives the
  normalised text back. A chunk exceeds chunk_chars only when one line does.
  """
  if chunk_chars < 1:
    raise ValueError(f"chunk_chars must be positive, got {chunk_chars}")
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f if line.strip()]
  if not lines:
    raise CorpusError(f"{path}: the book has no text")
  return [
    Document(source_id, title, "\n".join(chunk)) for chunk in _chunk_lines(lines, chunk_chars)
  ]


def _chunk_lines(lines: Sequence[str], chunk_chars: int) -> list[list[str]]:
  chunks: list[list[str]] = []
  size = 0
  for line in lines:
    if chunks and size + 1 + len(line) <= chunk_chars:
      chunks[-1].append(line)
      size += 1 + len(line)
    else:
      chunks.append([line])
      size = len(line)
  return chunks
