"""SentencePiece tokenizer trained on the run's own corpus and stored with the run."""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from etils import epath

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_MAX_SENTENCE_CHARS = 4096


class Tokenizer:
  """A SentencePiece model held as bytes, so it pickles into Grain workers."""

  def __init__(self, model_proto: bytes):
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

  def __getstate__(self):
    return {"model_proto": self.model_proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])

  @classmethod
  def load(cls, path: str | epath.PathLike) -> Tokenizer:
    path = epath.Path(path)
    if not path.exists():
      raise FileNotFoundError(f"no tokenizer at {path} (train one with `nullearn tokenizer train`)")
    return cls(path.read_bytes())

  def save(self, path: str | epath.PathLike) -> None:
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(self.model_proto)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def fingerprint(self) -> str:
    return hashlib.sha256(self.model_proto).hexdigest()[:16]

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Pieces of many texts in one call: SentencePiece's list encode, in its own threads."""
    return self._sp.encode(texts)

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) > EOS_ID])

  def encode_document(self, text: str) -> np.ndarray:
    """BOS + pieces + EOS: the unit that training packs and probes mirror."""
    return self.encode_part(text, first=True, last=True)

  def encode_part(self, text: str, *, first: bool, last: bool) -> np.ndarray:
    """One part of a document (`split_document`): BOS only on the first, EOS only on the last."""
    return np.asarray([BOS_ID] * first + self._sp.encode(text) + [EOS_ID] * last, np.int32)


def split_document(text: str, max_chars: int) -> list[str]:
  """Cuts text into parts of at most `max_chars`, at a newline or else a space where one lies
  in the part's second half.

  SentencePiece's memory grows with the string it encodes (about 500 bytes a
  character), so a long document is encoded part by part.
  """
  parts, start = [], 0
  while len(text) - start > max_chars:
    end = start + max_chars
    half = start + max_chars // 2
    cut = text.rfind("\n", half, end)
    cut = text.rfind(" ", half, end) if cut < 0 else cut
    end = cut + 1 if cut >= 0 else end
    parts.append(text[start:end])
    start = end
  parts.append(text[start:])
  return parts


def _sentences(texts: Iterable[str]) -> Iterator[str]:
  for text in texts:
    for line in text.splitlines():
      line = line.strip()
      while line:
        yield line[:_MAX_SENTENCE_CHARS]
        line = line[_MAX_SENTENCE_CHARS:]


def train_tokenizer(
  texts: Iterable[str],
  vocab_size: int,
  *,
  model_type: str = "bpe",
  byte_fallback: bool = True,
  max_sentences: int = 2_000_000,
) -> Tokenizer:
  """Trains on `texts` (single-threaded, so the same corpus gives the same model).

  Digits are single pieces, so a number tokenizes the same before "." as at the
  end of a cloze prompt's answer.
  """
  sentences = _sentences(texts)
  first = next(sentences, None)
  if first is None:
    raise ValueError("no text to train a tokenizer on: the corpus is empty")
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=itertools.chain([first], sentences),
    model_writer=out,
    vocab_size=vocab_size,
    model_type=model_type,
    byte_fallback=byte_fallback,
    character_coverage=1.0,
    pad_id=PAD_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    input_sentence_size=max_sentences,
    shuffle_input_sentence=False,
    split_digits=True,
    num_threads=1,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return Tokenizer(out.getvalue())


def for_run(
  workdir: str | epath.PathLike,
  texts: Iterable[str],
  tokenizer_cfg,
  vocab_size: int,
  given: str | epath.PathLike | None = None,
) -> Tokenizer:
  """The run's tokenizer, `<workdir>/tokenizer.model`, which is never overwritten.

  A workdir that has one keeps it (a resumed run); `given` must then be the
  same model. Otherwise `given` is copied in, or a tokenizer is trained on `texts`.
  """
  path = epath.Path(workdir) / "tokenizer.model"
  given_tok = Tokenizer.load(given) if given else None
  if path.exists():
    tok = Tokenizer.load(path)
    if given_tok is not None and given_tok.fingerprint != tok.fingerprint:
      raise ValueError(
        f"--tokenizer: {given} is not the tokenizer of the run in {workdir} "
        f"({path}); use that one, or a new workdir"
      )
    return tok
  tok = given_tok or train_tokenizer(
    texts,
    vocab_size,
    model_type=tokenizer_cfg.model_type,
    byte_fallback=tokenizer_cfg.byte_fallback,
    max_sentences=tokenizer_cfg.max_sentences,
  )
  tok.save(path)
  return tok
