import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nullearn.data import pipeline
from nullearn.data.records import Document
from nullearn.data.tokenizer import split_document


def dataset(world, tokenizer, **kw):
  args = dict(seq_len=32, batch_size=4, seed=0, num_epochs=1, packing_bins=8)
  args.update(kw)
  return pipeline.training_dataset(world.documents, tokenizer, **args)


def segments(batch):
  """(source ids, token sequence, positions) of every packed document piece."""
  for b in range(batch["inputs"].shape[0]):
    seg = batch["segment_ids"][b]
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      tokens = batch["inputs"][b, idx]
      if batch["weights"][
        b, idx[-1]
      ]:  # the piece runs to the row's end: its last token is a target
        tokens = np.r_[tokens, batch["targets"][b, idx[-1]]]
      yield (
        batch["source_ids"][b, idx],
        tokens,
        batch["positions"][b, idx],
        batch["weights"][b, idx],
      )


def document_chunks(tokenizer, text, seq_len):
  """The rows a document is cut into: its parts (`split_document`), each cut every seq_len + 1."""
  parts = split_document(text, pipeline.PART_ROWS * (seq_len + 1))
  tokens = [
    tokenizer.encode_part(part, first=i == 0, last=i == len(parts) - 1)
    for i, part in enumerate(parts)
  ]
  return [t[i : i + seq_len + 1] for t in tokens for i in range(0, len(t) - 1, seq_len + 1)]


def test_packing_round_trips_source_ids(world, tokenizer):
  chunks = {d.source_id: document_chunks(tokenizer, d.text, 32) for d in world.documents}
  docs = {sid: np.concatenate(c) for sid, c in chunks.items()}
  parts = [split_document(d.text, pipeline.PART_ROWS * 33) for d in world.documents]
  assert any(len(p) > 1 for p in parts), "some document spans several parts"
  seen_tokens = {sid: 0 for sid in docs}
  for batch in dataset(world, tokenizer):
    for src, tokens, pos, w in segments(batch):
      sid = int(src[0])
      assert np.all(src == sid), "a packed document has one source"
      assert np.array_equal(pos, np.arange(len(pos))), "positions restart in every document"
      # the piece is one whole chunk of its own source's document
      assert any(np.array_equal(chunk, tokens) for chunk in chunks[sid]), sid
      assert np.all(w[:-1] == 1.0), "every next token inside a document is a target"
      seen_tokens[sid] += len(tokens)
  # one epoch sees every document once (up to the last, partial batch)
  complete = sum(1 for sid, n in seen_tokens.items() if n == len(docs[sid]))
  assert complete >= len(docs) - 8


def test_targets_never_cross_documents(world, tokenizer):
  for batch in dataset(world, tokenizer):
    seg, w = batch["segment_ids"], batch["weights"]
    assert np.all(w[seg == 0] == 0), "padding is never trained on"
    boundary = seg[:, :-1] != seg[:, 1:]  # the next input starts another document
    assert np.all(w[:, :-1][boundary] == 0)
    assert w.dtype == np.float32
  assert set(pipeline.BATCH_KEYS) == set(batch)


def test_deterministic_in_seed_and_reshuffled_each_epoch(world, tokenizer):
  def first_sources(seed, n=3):
    it = iter(dataset(world, tokenizer, seed=seed, num_epochs=2))
    return [next(it)["source_ids"][:, 0].tolist() for _ in range(n)]

  assert first_sources(0) == first_sources(0)
  assert first_sources(0) != first_sources(1)
  one = list(dataset(world, tokenizer, num_epochs=1))
  two = list(dataset(world, tokenizer, num_epochs=2))
  epoch2 = two[len(one) : 2 * len(one)]
  assert [b["source_ids"][:, 0].tolist() for b in one] != [
    b["source_ids"][:, 0].tolist() for b in epoch2
  ]


def test_max_segments_caps_documents_per_row(world, tokenizer):
  short = [Document(i, f"s{i}", "a b c") for i in range(50)]
  ds = pipeline.training_dataset(
    short, tokenizer, seq_len=64, batch_size=4, seed=0, num_epochs=1, max_segments=3
  )
  assert max(b["segment_ids"].max() for b in ds) == 3
  ds = pipeline.training_dataset(short, tokenizer, seq_len=64, batch_size=4, seed=0, num_epochs=1)
  assert max(b["segment_ids"].max() for b in ds) > 3


def test_iterator_state_resumes_exactly(world, tokenizer):
  it = iter(dataset(world, tokenizer, num_epochs=None))
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  again = iter(dataset(world, tokenizer, num_epochs=None))
  again.set_state(state)
  for a, b in zip(want, [next(again) for _ in range(3)]):
    for k in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(a[k], b[k])


def test_process_shards_are_disjoint(world, tokenizer):
  shards = [
    {
      int(s)
      for b in dataset(world, tokenizer, shard_index=i, shard_count=2, batch_size=1)
      for s in np.unique(b["source_ids"][b["segment_ids"] > 0])
    }
    for i in range(2)
  ]
  assert shards[0] and shards[1] and not shards[0] & shards[1]


def test_empty_corpus_is_an_error(tokenizer):
  with pytest.raises(ValueError, match="no documents"):
    pipeline.training_dataset([], tokenizer, seq_len=8, batch_size=1, seed=0)


def test_long_document_is_tokenized_in_parts(tokenizer):
  """A document longer than a part is cut at whitespace, BOS first and EOS last, nothing lost."""
  text = " ".join(f"word{i % 97}" for i in range(40_000))  # ~270k characters
  parts = split_document(text, pipeline.PART_ROWS * 33)
  assert len(parts) > 1 and "".join(parts) == text
  tokens = [
    tokenizer.encode_part(p, first=i == 0, last=i == len(parts) - 1) for i, p in enumerate(parts)
  ]
  flat = np.concatenate(tokens)
  assert flat[0] == 2 and flat[-1] == 3 and np.sum(flat == 2) == 1 and np.sum(flat == 3) == 1
  assert tokenizer.decode(flat).split() == text.split()
  rows = pipeline.document_rows(tokenizer, [Document(source_id=5, source="long", text=text)], 32)
  # every token but each part's first is a target exactly once
  assert rows["weights"].sum() == len(flat) - len(parts)
  assert np.all(rows["source_ids"] == 5)


def test_peak_memory_of_a_20mb_document_is_bounded_by_rows():
  """Training on one 20 MB article costs no more memory than loading it (measured per process)."""
  bench = pathlib.Path(__file__).parents[1] / "benchmarks" / "long_document.py"
  peak = {}
  for way in ("baseline", "pipeline"):
    out = subprocess.run(
      [sys.executable, str(bench), f"--way={way}", "--mb=20"],
      capture_output=True,
      text=True,
      check=True,
    )
    peak[way] = json.loads(out.stdout)["peak_mib"]
  # tokenizing it whole costs ~840 MiB more (benchmarks/results/long_document.json)
  assert peak["pipeline"] - peak["baseline"] < 64, peak
