"""Reading a Wikipedia dataset prepared by `nullearn prepare`: TFDS, Grain, the source index
and the lazy corpus API, without TensorFlow.

The dataset is the small dump of tests/wikipedia_articles.py, prepared by the real
command; the scale tests prepare synthetic dumps through the same code.
"""

import pickle
import subprocess
import sys
import textwrap
import tracemalloc
from unittest import mock

import grain
import numpy as np
import pytest
from array_record.python import array_record_data_source
from wikipedia_articles import ARTICLES, DUPLICATE_TITLE, NAME, nullearn, write_shards
from wikipedia_articles import prepare as prepare_command

from nullearn.configs import wikipedia_tiny
from nullearn.data import corpus as corpus_lib
from nullearn.data import pipeline, prepare, source_index, synthetic_wikipedia, wikipedia
from nullearn.data.source_index import SourceIndex, UnknownSourceError
from nullearn.data.wikipedia import WikipediaSource
from nullearn.model import ModelConfig

UNIQUE = [d for d in ARTICLES if d.source != DUPLICATE_TITLE]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  parquet = tmp_path_factory.mktemp("parquet")
  write_shards(parquet)
  return prepare_command(tmp_path_factory.mktemp("tfds"), parquet, "--workers=1")


@pytest.fixture(scope="module")
def source(data_dir):
  return WikipediaSource(data_dir=data_dir)


def _config(data_dir, **data):
  c = wikipedia_tiny.get_config()
  c.data.tfds_data_dir = str(data_dir)
  c.data.update(data)
  return c


def test_each_record_is_an_article_whose_page_id_is_its_source_id(source):
  assert len(source) == len(ARTICLES)
  assert [source[i] for i in range(len(source))] == ARTICLES
  assert source._getitems([5, 3, 63]) == [ARTICLES[5], ARTICLES[3], ARTICLES[63]]
  for bad in (len(ARTICLES), -1):
    with pytest.raises(IndexError, match="out of range"):
      source[bad]


def _counting_reads():
  """Patches ArrayRecord's reads to record which record positions are read."""
  reader = array_record_data_source.ArrayRecordDataSource
  one = mock.patch.object(reader, "__getitem__", autospec=True, side_effect=reader.__getitem__)
  many = mock.patch.object(reader, "__getitems__", autospec=True, side_effect=reader.__getitems__)
  return one, many


def _read_positions(read_one, read_many) -> list[int]:
  return [c.args[1] for c in read_one.call_args_list] + [
    k for c in read_many.call_args_list for k in c.args[1]
  ]


def test_grain_shard_reads_only_its_share(source, tokenizer):
  one, many = _counting_reads()
  with one as read_one, many as read_many:
    shard = grain.MapDataset.source(source)[1::4]
    assert len(shard) == len(ARTICLES) // 4
    assert read_one.call_count == read_many.call_count == 0, "slicing reads nothing"
    batches = list(
      pipeline.training_dataset(
        shard, tokenizer, seq_len=32, batch_size=4, seed=0, num_epochs=1, packing_bins=8
      )
    )
  share = {ARTICLES[i].source_id for i in range(1, len(ARTICLES), 4)}
  assert sorted(_read_positions(read_one, read_many)) == list(range(1, len(ARTICLES), 4))
  trained = {int(s) for b in batches for s in b["source_ids"][b["segment_ids"] > 0]}
  assert trained <= share and len(trained) > len(share) // 2


def test_by_ids_reads_only_those_records(source):
  wanted = [ARTICLES[40], ARTICLES[4], ARTICLES[0]]
  one, many = _counting_reads()
  with one as read_one, many as read_many:
    assert source.by_ids([d.source_id for d in wanted]) == wanted
  assert sorted(_read_positions(read_one, read_many)) == [0, 4, 40]


def test_the_index_finds_every_article_by_page_id_and_title(source):
  index = source.index
  assert len(index) == len(ARTICLES)
  assert index.positions([d.source_id for d in ARTICLES]) == list(range(len(ARTICLES)))
  assert [index.lookup(d.source) for d in UNIQUE] == [d.source_id for d in UNIQUE]
  for unknown in ("Not an article", "ærøskøbing", UNIQUE[0].source + " "):
    with pytest.raises(UnknownSourceError, match="no article is titled"):
      index.lookup(unknown)
  for bad_id in (11, 0, -5, 2**40, ARTICLES[0].source_id + 1):
    with pytest.raises(UnknownSourceError, match=f"source id {bad_id} is not in the corpus"):
      index.positions([ARTICLES[1].source_id, bad_id])


def test_a_title_of_two_articles_must_be_named_by_id(source):
  twins = [d.source_id for d in ARTICLES if d.source == DUPLICATE_TITLE]
  with pytest.raises(
    ValueError, match=f"2 articles are titled 'Mercury' \\(source ids {twins[0]}, {twins[1]}\\)"
  ):
    source.index.lookup(DUPLICATE_TITLE)


def test_title_lookups_compare_titles_when_hashes_collide(source, tmp_path, monkeypatch):
  def few_hashes(title: str) -> int:
    return sum(title.encode()) % 4  # ~16 titles per hash

  monkeypatch.setattr(source_index, "title_hash", few_hashes)
  index = SourceIndex.build(source, tmp_path)
  assert [index.lookup(d.source) for d in UNIQUE] == [d.source_id for d in UNIQUE]
  unknown = "Article 1000"
  assert any(few_hashes(d.source) == few_hashes(unknown) for d in ARTICLES)
  with pytest.raises(UnknownSourceError):
    index.lookup(unknown)


def test_an_index_built_from_the_records_equals_the_prepared_one(source, tmp_path):
  SourceIndex.build(source, tmp_path)
  for name in source_index.FILES:
    np.testing.assert_array_equal(np.load(tmp_path / name), np.load(f"{source.index_path}/{name}"))


def test_a_missing_or_stale_index_is_refused(data_dir, source, tmp_path):
  with pytest.raises(FileNotFoundError, match="no source index at"):
    SourceIndex(tmp_path, source)
  source_index.write(tmp_path, np.arange(10), np.arange(10, dtype=np.uint64))
  with pytest.raises(ValueError, match=f"covers 10 records but the source has {len(ARTICLES)}"):
    SourceIndex(tmp_path, source)
  ids = [d.source_id for d in ARTICLES]
  source_index.write(tmp_path, np.array(ids[1:] + ids[:1]), np.zeros(len(ids), np.uint64))
  stale = WikipediaSource(data_dir=data_dir, index=tmp_path)
  with pytest.raises(ValueError, match=f"page id {ids[1]} points at page {ids[0]}"):
    stale.by_ids([ids[1]])


def test_source_pickles_for_grain_workers(source):
  assert source.index.lookup(UNIQUE[3].source) == UNIQUE[3].source_id  # maps the index
  clone = pickle.loads(pickle.dumps(source))
  assert clone[42] == source[42]
  assert clone.by_ids([UNIQUE[7].source_id]) == [UNIQUE[7]]


@pytest.mark.parametrize("name", [wikipedia.DEFAULT_NAME, "wikipedia/20230601.en"])
def test_missing_dataset_says_where_and_how_to_prepare(tmp_path, name):
  with pytest.raises(FileNotFoundError) as e:
    WikipediaSource(name, data_dir=tmp_path)
  assert str(tmp_path) in str(e.value)
  if name == wikipedia.DEFAULT_NAME:
    assert f"`nullearn prepare wikipedia --out={tmp_path}`" in str(e.value)
    run = nullearn("prepare", "wikipedia", f"--out={tmp_path}", "--parquet=/nowhere/*.parquet")
    assert "no parquet files" in run.stderr, "the command in the message is a real command"


def test_reading_never_imports_tensorflow(data_dir):
  script = textwrap.dedent(f"""
      import sys
      import grain
      import tensorflow_datasets as tfds
      from nullearn.data.records import Document
      from nullearn.data.wikipedia import WikipediaSource
      source = WikipediaSource(data_dir={str(data_dir)!r})
      assert source[3] == {ARTICLES[3]!r}
      assert source.index.lookup({UNIQUE[9].source!r}) == {UNIQUE[9].source_id}
      assert len(source._getitems([1, 2])) == 2
      records = tfds.data_source({NAME!r}, data_dir={str(data_dir)!r}, split="train")
      assert [int(r["id"]) for r in grain.MapDataset.source(records)[:3]] == \
          {[d.source_id for d in ARTICLES[:3]]}
      loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
      assert not loaded, loaded
      """)
  run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]


def test_sample_texts_draws_distinct_articles_reproducibly(source):
  texts = [d.text for d in ARTICLES]
  sample = wikipedia.sample_texts(source, 20, seed=0)
  assert len(sample) == 20 and set(sample) <= set(texts)
  assert wikipedia.sample_texts(source, 20, seed=0) == sample
  assert wikipedia.sample_texts(source, 20, seed=1) != sample
  assert sorted(wikipedia.sample_texts(source, 10 * len(ARTICLES), seed=0)) == sorted(texts)
  with pytest.raises(ValueError, match="at least 1"):
    wikipedia.sample_texts(source, 0, seed=0)


def test_tiny_config_names_the_prepared_dataset(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/tfds")
  c = wikipedia_tiny.get_config()
  assert c.data.corpus == f"tfds:{prepare.NAME}/{prepare.CONFIG}" == "tfds:" + NAME
  assert c.data.tfds_data_dir == "gs://bucket/tfds"
  assert c.train.steps > 0, "counting epochs would tokenize the whole corpus first"
  ModelConfig.from_config(c.model)
  monkeypatch.delenv("TFDS_DATA_DIR")
  c = wikipedia_tiny.get_config()
  assert c.data.tfds_data_dir == "", "'' means TFDS's default directory"
  with pytest.raises(ValueError, match="unknown variant"):
    wikipedia_tiny.get_config("plain")


def test_a_tfds_corpus_stays_lazy_and_names_sources_by_page_id_or_title(data_dir):
  corpus = corpus_lib.load(_config(data_dir))
  assert not corpus.in_memory and len(corpus.documents) == len(ARTICLES)
  a, b = UNIQUE[3], UNIQUE[20]
  assert (
    corpus_lib.resolve_sources(corpus, [a.source_id, str(b.source_id), a.source, b.source])
    == [a.source_id, b.source_id] * 2
  )
  for unknown, message in (
    ("3", "source id 3 is not in the corpus"),
    ("Nowhere", "no article is titled 'Nowhere'"),
    ("id:x", "'x' is not a page id"),
  ):
    with pytest.raises(ValueError, match=message):
      corpus_lib.resolve_sources(corpus, [unknown])
  kept = corpus_lib.training_set(
    corpus, _config(data_dir, exclude_sources=(a.source_id, b.source))
  ).documents
  assert isinstance(kept, grain.MapDataset)
  assert list(kept.to_iter_dataset()) == [d for d in ARTICLES if d not in (a, b)]
  c = _config(data_dir)
  c.tokenizer.sample_docs = 10
  texts = list(corpus_lib.tokenizer_texts(corpus, c))
  assert len(texts) == 10 and set(texts) <= {d.text for d in ARTICLES}


def test_numeric_titles_resolve_and_a_number_that_is_both_must_say_which(data_dir):
  corpus = corpus_lib.load(_config(data_dir))
  year = next(d for d in ARTICLES if d.source == "1984")
  titled_17 = next(d for d in ARTICLES if d.source == "17")
  assert ARTICLES[45].source_id == 17
  assert corpus_lib.resolve_sources(corpus, ["1984", "id:17", "title:17"]) == [
    year.source_id,
    17,
    titled_17.source_id,
  ]
  with pytest.raises(
    ValueError,
    match=f"'17' is both a page id and the title of page "
    f"{titled_17.source_id}: write id:17 or title:17",
  ):
    corpus_lib.resolve_sources(corpus, ["17"])


def test_a_copied_index_is_used_when_configured(data_dir, source, tmp_path):
  SourceIndex.build(source, tmp_path / "copy")
  corpus = corpus_lib.load(_config(data_dir, title_index=str(tmp_path / "copy")))
  assert corpus.documents.index_path == str(tmp_path / "copy")
  assert corpus_lib.resolve_sources(corpus, [UNIQUE[5].source]) == [UNIQUE[5].source_id]


def test_documents_of_and_sample_sources_lazy_and_in_memory(data_dir):
  lazy = corpus_lib.load(_config(data_dir))
  in_memory = corpus_lib.Corpus(tuple(ARTICLES))
  wanted = [ARTICLES[9].source_id, ARTICLES[2].source_id]
  assert corpus_lib.documents_of(lazy, wanted) == [ARTICLES[9], ARTICLES[2]]
  assert corpus_lib.documents_of(in_memory, wanted) == [ARTICLES[2], ARTICLES[9]]
  for corpus in (lazy, in_memory):
    with pytest.raises(ValueError, match="source id 1 is not in the corpus"):
      corpus_lib.documents_of(corpus, [ARTICLES[0].source_id, 1])
    all_ids = {d.source_id for d in ARTICLES}
    exclude = wanted + [12345]  # an id not in the corpus is simply not drawn
    sample = corpus_lib.sample_sources(corpus, 20, seed=0, exclude=exclude)
    assert len(set(sample)) == 20 and sample == sorted(sample)
    assert set(sample) <= all_ids - set(wanted)
    assert corpus_lib.sample_sources(corpus, 20, seed=0, exclude=exclude) == sample
    assert corpus_lib.sample_sources(corpus, 20, seed=1, exclude=exclude) != sample
    assert corpus_lib.sample_sources(corpus, 1000, seed=0, exclude=wanted) == sorted(
      all_ids - set(wanted)
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """Synthetic dumps of 25k and 100k short articles, prepared by the real code."""
  dirs = {}
  for n in (25_000, 100_000):
    root = tmp_path_factory.mktemp(f"synthetic{n}")
    files = synthetic_wikipedia.write_parquet(root / "parquet", n, shards=2, mean_chars=40)
    prepare.prepare(str(root / "tfds"), files, workers=1, log=lambda _: None)
    dirs[n] = root / "tfds"
  return dirs


def _lazy_corpus_work(data_dir) -> tuple[int, list[int]]:
  """Peak traced bytes and records read to name, read and sample a fixed number of sources."""
  one, many = _counting_reads()
  tracemalloc.start()
  try:
    with one as read_one, many as read_many:
      corpus = corpus_lib.load(_config(data_dir))
      n = len(corpus.documents)
      picks = [corpus.documents[i] for i in (0, n // 3, n - 1)]
      forget = corpus_lib.resolve_sources(
        corpus, [d.source for d in picks] + [str(picks[0].source_id)]
      )
      assert corpus_lib.documents_of(corpus, forget) == picks + picks[:1]
      retained = corpus_lib.sample_sources(corpus, 100, seed=0, exclude=forget)
      assert len(retained) == 100 and not set(retained) & set(forget)
      assert len(corpus_lib.documents_of(corpus, retained)) == 100
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  return peak, _read_positions(read_one, read_many)


def test_lazy_corpus_costs_do_not_grow_with_the_corpus(synthetic):
  _lazy_corpus_work(synthetic[25_000])  # first-use allocations (caches) out of the way
  peak_small, reads_small = _lazy_corpus_work(synthetic[25_000])
  peak_large, reads_large = _lazy_corpus_work(synthetic[100_000])
  # 3 picks + 3 title checks + 4 documents + 100 sampled documents, at either size
  assert len(reads_small) == len(reads_large) == 110
  on_disk = 100_000 * 20  # the large corpus's index
  assert peak_large < peak_small + 64_000, (peak_small, peak_large)
  assert peak_large < on_disk // 4, f"{peak_large} bytes held for a {on_disk}-byte index"


def test_a_pickled_source_reopens_its_index_instead_of_copying_it(synthetic):
  source = WikipediaSource(data_dir=synthetic[100_000])
  assert source.index.positions([source[7].source_id]) == [7]
  blob = pickle.dumps(source)
  assert len(blob) < 20_000, f"{len(blob)} bytes: the 2 MB index went along"
  assert pickle.loads(blob).by_ids([source[9].source_id]) == [source[9]]


def test_wikipedia_tiny_trains_on_the_prepared_copy(data_dir, tmp_path):
  """The pod's data path end to end on a CPU: TFDS source -> tokenizer sample -> Grain -> steps."""
  from nullearn import train
  from nullearn.data.tokenizer import train_tokenizer

  c = _config(data_dir)
  c.tokenizer.sample_docs = 100
  c.train.update(dict(steps=3, log_every=1, progress=False))
  c.model.vocab_size = 512
  c.mesh.update(dict(data=1, fsdp=1, tensor=1))
  corpus = corpus_lib.load(c)
  tok = train_tokenizer(corpus_lib.tokenizer_texts(corpus, c), 512)
  c.data.exclude_sources = (UNIQUE[5].source_id,)
  result = train.train(c, tmp_path, corpus, tok)
  assert int(result.state.step) == 3 and np.isfinite(result.history[-1]["loss"])
