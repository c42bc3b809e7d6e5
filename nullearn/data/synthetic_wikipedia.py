"""Synthetic articles in the Wikipedia dump's parquet format, for measurements at its scale.

`nullearn prepare` converts them like the real dump, so preparation, reading and
evaluation can be measured on millions of articles without downloading any.
Lengths are lognormal with Wikipedia's mean of about 3,000 characters (median
about 1,800); the text is cut from a long stream of made-up words drawn with
Zipf frequencies, so it compresses roughly like prose; page ids grow with random
gaps, as real ones do. The words form sentences, some of them stating a year or
naming someone, so cloze probes can be built from the text as from real articles.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_SYLLABLES = (
  "ka",
  "to",
  "ri",
  "an",
  "el",
  "mo",
  "su",
  "ven",
  "dor",
  "li",
  "ta",
  "gor",
  "e",
  "is",
  "un",
  "ba",
  "ne",
  "ol",
  "fi",
  "ra",
)
_VOCABULARY = 20_000
_STREAM_WORDS = 2_000_000  # ~12M characters to cut articles from
_SIGMA = 1.0  # of the log length; Wikipedia's lengths spread over orders of magnitude


def articles(
  num_articles: int, *, mean_chars: float = 3000.0, seed: int = 0
) -> tuple[np.ndarray, list[str], list[str]]:
  """(page ids, titles, texts) of `num_articles` made-up articles."""
  rng = np.random.default_rng(seed)
  words = _vocabulary(rng)
  ranks = np.arange(1, len(words) + 1)
  stream = _sentences(
    words[rng.choice(len(words), _STREAM_WORDS, p=(1 / ranks) / (1 / ranks).sum())], rng
  )
  ids = 10 + np.cumsum(1 + rng.geometric(0.3, num_articles))  # sparse, increasing
  mu = np.log(mean_chars) - _SIGMA**2 / 2  # lognormal mean = exp(mu + sigma^2 / 2)
  lengths = np.clip(rng.lognormal(mu, _SIGMA, num_articles), 20, len(stream) - 1).astype(int)
  starts = rng.integers(0, len(stream) - lengths)
  titles = [f"{words[i % len(words)].title()} {i}" for i in ids]
  return ids, titles, [stream[s : s + n] for s, n in zip(starts, lengths)]


def write_parquet(
  out_dir: str | os.PathLike[str],
  num_articles: int,
  *,
  shards: int = 41,
  mean_chars: float = 3000.0,
  seed: int = 0,
) -> list[pathlib.Path]:
  """Writes `num_articles` articles (columns id, url, title, text) as `shards` parquet files."""
  ids, titles, texts = articles(num_articles, mean_chars=mean_chars, seed=seed)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for k, rows in enumerate(np.array_split(np.arange(num_articles), shards)):
    paths.append(out_dir / f"train-{k:05d}-of-{shards:05d}.parquet")
    pq.write_table(
      dump_table(ids[rows].tolist(), [titles[i] for i in rows], [texts[i] for i in rows]), paths[-1]
    )
  return paths


def dump_table(ids: list[int], titles: list[str], texts: list[str]) -> pa.Table:
  """Articles in the dump's schema (page ids as decimal strings, as the dump has them)."""
  return pa.table(
    {
      "id": [str(i) for i in ids],
      "url": [f"https://en.wikipedia.org/wiki?curid={i}" for i in ids],
      "title": titles,
      "text": texts,
    }
  )


def _sentences(stream_words: np.ndarray, rng: np.random.Generator) -> str:
  """The words cut into sentences of 8 to 24; a third end "in <year>", a fifth name a person."""
  out, i = [], 0
  while i < len(stream_words):
    n = int(rng.integers(8, 25))
    sentence = list(stream_words[i : i + n])
    i += n
    if rng.random() < 0.2:
      first, last = rng.choice(stream_words[:5000], 2)
      sentence.insert(len(sentence) // 2, f"{first.title()} {last.title()}")
    if rng.random() < 0.33:
      sentence += ["in", str(int(rng.integers(1500, 2024)))]
    text = " ".join(sentence)
    out.append(text[0].upper() + text[1:] + ".")
  return " ".join(out)


def _vocabulary(rng: np.random.Generator) -> np.ndarray:
  syllables = rng.choice(len(_SYLLABLES), (_VOCABULARY, 4))
  sizes = rng.integers(1, 5, _VOCABULARY)
  return np.array(["".join(_SYLLABLES[s] for s in row[:n]) for row, n in zip(syllables, sizes)])
