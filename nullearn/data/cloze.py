"""Automatic cloze probes for real corpora, which come without any.

A probe asks for a salient span of one sentence (a year 1000-2099, another
number, or a capitalised name) after the sentence's text before it. A name is a
maximal run of capitalised words, possibly linked by "of", "de" and the like; it
never starts a sentence, never touches `<unk>` (it would be a fragment), and
never consists only of words the corpus also writes in lower case ("Going",
"May"). Distractors are spans of the same type (names of the same length while
there are enough) that occur in other sources and never in the probe's own, so a
model that never read the sentence can only guess among plausible options.

Sentences never cross line breaks: a WikiText line is a paragraph, and a verse
line is the most a play's prompt should span. A sentence ends after a token
ending in ".", "!" or "?", except after an initial ("H.") or a common
abbreviation ("No.", "St."), which matters for word-tokenised WikiText where the
full stop of a sentence is a token of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from nullearn.data.records import MIN_DISTRACTORS, Document, Probe, sources_by_id

YEAR, NUMBER, NAME = "year", "number", "name"
# A probe is "shared" when its answer follows the same last words of its prompt in another source.
SHARED_CONTEXT_WORDS = 3
UNK = "<unk>"

_YEAR = re.compile(r"1\d{3}|20\d{2}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME_WORD = re.compile(r"[A-Z][A-Za-z]+(?:['-][A-Za-z]+)*")
_ALNUM = re.compile(r"[^\W_]")
_TRAILING = ".,;:!?\"')]"
# Lower-case words inside names; "the" only after "of" ("Battle of the Somme").
_NAME_LINKS = frozenset("of de la le du del da von van der".split())
_ABBREVIATIONS = frozenset(
  "Mr Mrs Ms Dr St No Jr Sr Co Inc Lt Gen Col Capt Sgt Mt Ft Vol Fig vs".split()
)
# Capitalised mid-sentence after a quote or colon, but never the start of a name.
_NOT_NAMES = frozenset(
  "The This That These Those He She It They We You His Her Its Their Our My In On At Of".split()
)


@dataclasses.dataclass(frozen=True)
class _Span:
  kind: str  # YEAR, NUMBER or NAME
  prompt: str
  answer: str
  prompt_words: int


# The last words of a probe's prompt and the words of its answer, punctuation dropped.
_Key = tuple[tuple[str, ...], tuple[str, ...]]


def make_probes(
  docs: Sequence[Document],
  *,
  per_source: int = 8,
  shared_per_source: int = 2,
  num_distractors: int = 4,
  seed: int = 0,
  min_prompt_words: int = 6,
) -> list[Probe]:
  """Cloze probes per source, spread over its text, in source and then text order.

  A span is shared when its answer, preceded by the last SHARED_CONTEXT_WORDS
  words of its prompt, also occurs in another source's text (words compared
  exactly, punctuation ignored): the fact survives forgetting the source. Each
  source gets up to per_source "unique" probes from its other spans and up to
  shared_per_source "shared" ones, so shared facts are asked wherever a corpus
  states them, however rare they are among a source's spans.
  """
  _check_at_least("per_source", per_source, 1)
  _check_at_least("shared_per_source", shared_per_source, 0)
  _check_at_least("num_distractors", num_distractors, MIN_DISTRACTORS)
  _check_at_least("min_prompt_words", min_prompt_words, 1)
  words, spans = _corpus_spans(docs)
  pool = _DistractorPool(spans)
  usable = {
    sid: [
      s
      for s in source_spans
      if s.prompt_words >= min_prompt_words and pool.can_serve(sid, s, num_distractors)
    ]
    for sid, source_spans in spans.items()
  }
  stating = _sources_stating(words, [_context_key(s) for ss in usable.values() for s in ss])
  rng = random.Random(seed)
  probes = []
  for sid, source_spans in usable.items():
    shared = [bool(stating[_run(s)] - {sid}) for s in source_spans]
    order = {s: i for i, s in enumerate(source_spans)}
    chosen = sorted(
      [
        (s, "unique")
        for s in _spread([s for s, sh in zip(source_spans, shared) if not sh], per_source, rng)
      ]
      + [
        (s, "shared")
        for s in _spread([s for s, sh in zip(source_spans, shared) if sh], shared_per_source, rng)
      ],
      key=lambda span_kind: order[span_kind[0]],
    )
    probes += [
      Probe(sid, s.prompt, s.answer, pool.draw(sid, s, num_distractors, rng), kind)
      for s, kind in chosen
    ]
  return probes


def shared_facts(docs: Sequence[Document], *, min_prompt_words: int = 6) -> dict[str, set[int]]:
  """Facts that several sources state: "<context words> <answer>" -> the sources stating it.

  The candidates are the spans make_probes could ask (prompts of at least
  min_prompt_words words); a corpus can be cut to groups of sources sharing
  facts so that its shared probes are not a handful.
  """
  _check_at_least("min_prompt_words", min_prompt_words, 1)
  words, spans = _corpus_spans(docs)
  keys = [
    _context_key(s)
    for source_spans in spans.values()
    for s in source_spans
    if s.prompt_words >= min_prompt_words
  ]
  stating = _sources_stating(words, keys)
  return {" ".join(run): sids for run, sids in stating.items() if len(sids) > 1}


def _corpus_spans(
  docs: Sequence[Document],
) -> tuple[dict[int, list[list[str]]], dict[int, list[_Span]]]:
  """Each source's texts as words, and its candidate spans in text order."""
  texts = _source_texts(docs)
  words = {sid: [_words(text) for text in source_texts] for sid, source_texts in texts.items()}
  common = {
    w
    for source_words in words.values()
    for text_words in source_words
    for w in text_words
    if w.islower()
  }
  spans = {
    sid: _dedup(
      s for text in source_texts for s in _text_spans(text) if not _is_common_name(s, common)
    )
    for sid, source_texts in texts.items()
  }
  return words, spans


def _check_at_least(name: str, value: int, low: int) -> None:
  if value < low:
    raise ValueError(f"{name} must be at least {low}, got {value}")


def _source_texts(docs: Sequence[Document]) -> dict[int, list[str]]:
  if not docs:
    raise ValueError("make_probes needs documents, got none")
  sources_by_id(docs)  # a source's id and name must agree everywhere
  texts: dict[int, list[str]] = defaultdict(list)
  for doc in docs:
    texts[doc.source_id].append(doc.text)
  return dict(texts)


def _dedup(spans: Iterable[_Span]) -> list[_Span]:
  return list(dict.fromkeys(spans))


def _is_common_name(span: _Span, common: set[str]) -> bool:
  """Capitalised words the corpus also writes in lower case ("Going", "May") are rarely names."""
  capitalised = [w for w in span.answer.split() if w[0].isupper()]
  return span.kind == NAME and all(w.lower() in common for w in capitalised)


def _text_spans(text: str) -> Iterator[_Span]:
  for line in text.split("\n"):
    for sentence in _sentences(line):
      yield from _sentence_spans(line, sentence)


def _sentences(line: str) -> Iterator[list[re.Match[str]]]:
  """Each sentence of a line as its token matches, which keep their offsets in the line."""
  sentence: list[re.Match[str]] = []
  for token in re.finditer(r"\S+", line):
    sentence.append(token)
    if _ends_sentence(token.group()):
      yield sentence
      sentence = []
  if sentence:
    yield sentence


def _ends_sentence(token: str) -> bool:
  if token[-1] in "!?":
    return True
  if token[-1] != ".":
    return False
  word = token[:-1]
  return not ((len(word) == 1 and word.isalpha()) or "." in word or word in _ABBREVIATIONS)


def _sentence_spans(line: str, tokens: Sequence[re.Match[str]]) -> Iterator[_Span]:
  """Years, numbers and maximal runs of capitalised words, except at the sentence start."""
  cores = [t.group().rstrip(_TRAILING) for t in tokens]
  words_before = list(itertools.accumulate((_is_word(c) for c in cores), initial=0))
  i = 0
  while i < len(tokens):
    kind = _span_kind(cores[i])
    end = _name_end(tokens, cores, i) if kind == NAME else i
    if (
      kind
      and i > 0
      and line[tokens[i - 1].end() : tokens[i].start()] == " "
      and (kind != NAME or _is_whole_name(tokens, cores, i, end))
    ):
      prompt = line[tokens[0].start() : tokens[i - 1].end()]
      answer = line[tokens[i].start() : tokens[end].start() + len(cores[end])]
      yield _Span(kind, prompt, answer, words_before[i])
    i = end + 1


def _span_kind(core: str) -> str | None:
  if not core[:1].isdigit() and not core[:1].isupper():  # most tokens; saves three regex matches
    return None
  if _YEAR.fullmatch(core):
    return YEAR
  if _NUMBER.fullmatch(core):
    return NUMBER
  if _NAME_WORD.fullmatch(core):
    return NAME
  return None


def _name_end(tokens: Sequence[re.Match[str]], cores: Sequence[str], start: int) -> int:
  """Last token of the name at start, which runs over `<unk>` and links ("Bank of England")
  but not over punctuation."""
  end = j = start
  while j + 1 < len(tokens) and cores[j] == tokens[j].group():
    j += 1
    if UNK in cores[j] or _NAME_WORD.fullmatch(cores[j]):
      end = j
    elif not (cores[j] in _NAME_LINKS or (cores[j] == "the" and cores[j - 1] == "of")):
      break
  return end


def _is_whole_name(
  tokens: Sequence[re.Match[str]], cores: Sequence[str], start: int, end: int
) -> bool:
  """A name with or after `<unk>` is a fragment of a longer one, which no prompt could ask for;
  an abbreviation alone ("Mr", "St") is a fragment too."""
  return (
    UNK not in tokens[start - 1].group()
    and not any(UNK in core for core in cores[start : end + 1])
    and cores[start] not in _NOT_NAMES
    and not (start == end and cores[start] in _ABBREVIATIONS)
  )


def _is_word(token: str) -> bool:
  return _ALNUM.search(token) is not None


def _words(text: str) -> list[str]:
  """Words without punctuation: tokens holding a letter or digit, trailing punctuation cut."""
  return [t.rstrip(_TRAILING) for t in text.split() if _is_word(t)]


class _DistractorPool:
  """Spans by type from all sources. A source draws only spans it never contains itself,
  where a distractor might be true."""

  def __init__(self, spans: dict[int, list[_Span]]):
    self._sources: dict[str, set[int]] = defaultdict(set)
    kinds: dict[str, str] = {}
    for sid, source_spans in spans.items():
      for s in source_spans:
        self._sources[s.answer].add(sid)
        kinds[s.answer] = s.kind
    self._groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    self._own: dict[tuple[int, tuple[str, int]], int] = defaultdict(int)
    for answer in sorted(kinds):
      for group in _distractor_groups(kinds[answer], answer):
        self._groups[group].append(answer)
        for sid in self._sources[answer]:
          self._own[sid, group] += 1

  def can_serve(self, source_id: int, span: _Span, n: int) -> bool:
    group = (span.kind, 0)
    return len(self._groups[group]) - self._own[source_id, group] >= n

  def draw(self, source_id: int, span: _Span, n: int, rng: random.Random) -> tuple[str, ...]:
    """n distinct spans of the answer's type; names of the answer's length while enough exist."""
    picked = self._sample(source_id, _distractor_groups(span.kind, span.answer)[-1], n, rng)
    if len(picked) < n:
      picked += self._sample(source_id, (span.kind, 0), n - len(picked), rng, taken=picked)
    return tuple(picked)

  def _sample(
    self,
    source_id: int,
    group: tuple[str, int],
    n: int,
    rng: random.Random,
    taken: Sequence[str] = (),
  ) -> list[str]:
    """Up to n spans of a group from other sources, none taken: a uniform sample large
    enough to keep n after dropping the source's own spans and the taken ones."""
    answers = self._groups[group]
    size = min(len(answers), n + self._own[source_id, group] + len(taken))
    fresh = [
      a for a in rng.sample(answers, size) if source_id not in self._sources[a] and a not in taken
    ]
    return fresh[:n]


def _distractor_groups(kind: str, answer: str) -> list[tuple[str, int]]:
  """The distractor groups of a span: its type, and for names also its type and length."""
  if kind == NAME:
    return [(kind, 0), (kind, len(answer.split()))]
  return [(kind, 0)]


def _spread(spans: Sequence[_Span], k: int, rng: random.Random) -> list[_Span]:
  """One random span from each of k equal stretches of the text, so probes cover all of it."""
  n = len(spans)
  if n <= k:
    return list(spans)
  return [spans[rng.randrange(i * n // k, (i + 1) * n // k)] for i in range(k)]


def _context_key(span: _Span) -> _Key:
  return tuple(_words(span.prompt)[-SHARED_CONTEXT_WORDS:]), tuple(_words(span.answer))


def _run(span: _Span) -> tuple[str, ...]:
  """The words of a span's context key in a row, as they would follow each other in a text."""
  context, answer = _context_key(span)
  return context + answer


def _sources_stating(
  words: dict[int, list[list[str]]], keys: Iterable[_Key]
) -> dict[tuple[str, ...], set[int]]:
  """For each key, as its run of words, the sources whose words contain that run.

  One pass over the corpus per distinct run length, looking each run up in a set."""
  by_length: dict[int, set[tuple[str, ...]]] = defaultdict(set)
  for context, answer in keys:
    by_length[len(context) + len(answer)].add(context + answer)
  found: dict[tuple[str, ...], set[int]] = defaultdict(set)
  for sid, source_words in words.items():
    for text_words in source_words:
      for length, runs in by_length.items():
        for i in range(len(text_words) - length + 1):
          run = tuple(text_words[i : i + length])
          if run in runs:
            found[run].add(sid)
  return found
