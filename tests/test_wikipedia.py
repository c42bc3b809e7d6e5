"""Wikipedia through TFDS and Grain, on a tiny prepared copy and on tfds.testing.mock_data.

Nothing here downloads or needs TensorFlow: the tiny copy is written locally as
ArrayRecord, and it also provides the metadata that `mock_data` loads (TFDS
4.9.10's code builder does not know the 20231101 dump, so MockPolicy.USE_CODE
cannot construct it).
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
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source

from nullearn.configs import wikipedia_tiny
from nullearn.data import corpus as corpus_lib
from nullearn.data import pipeline, wikipedia
from nullearn.data.records import Document
from nullearn.data.wikipedia import TitleIndex, UnknownTitleError, WikipediaSource
from nullearn.model import ModelConfig

NUM_ARTICLES = 300
TITLES = [f"Ärticle {i}" if i % 7 == 0 else f"Article {i}" for i in range(NUM_ARTICLES)]
TEXTS = [f"{title} is article number {i}. " * (1 + i % 5) for i, title in enumerate(TITLES)]
MOCK_ARTICLES = 400


class _TinyWikipedia(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Prepares a Wikipedia-shaped split on disk, records in generation order."""
  name = "wikipedia"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="20231101.en")]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({"title": tfds.features.Text(),
                                             "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, (title, text) in enumerate(zip(TITLES, TEXTS)):
      yield i, {"title": title, "text": text}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  builder = _TinyWikipedia(config="20231101.en", data_dir=path, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return path


@pytest.fixture(scope="module")
def source(data_dir):
  return WikipediaSource(data_dir=data_dir)


@pytest.fixture(scope="module")
def mock_source(data_dir):
  """The source and TFDS's own view of the same mocked records."""
  reader = tfds.testing.PickableDataSourceMock()
  # The source keeps the mocked reader it opened, so the patches need not outlive this.
  with tfds.testing.mock_data(num_examples=MOCK_ARTICLES, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(data_dir), mock_array_record_data_source=reader):
    src, raw = WikipediaSource(), tfds.data_source(wikipedia.DEFAULT_NAME, split="train")
  # TFDS 4.9.10 mocks batched reads with a function that misses its `self` argument.
  reader.return_value.__getitems__ = lambda keys: [reader.return_value[k] for k in keys]
  return src, raw


class _SyntheticCorpus:
  """A large corpus that makes its documents on demand, so it costs no memory itself."""

  def __init__(self, n: int):
    self.n = n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, index: int) -> Document:
    return Document(index, f"Title {index}", "")


def test_documents_are_records_with_their_index_as_source_id(source):
  assert len(source) == NUM_ARTICLES
  for i in (0, 7, 123, NUM_ARTICLES - 1):
    assert source[i] == Document(i, TITLES[i], TEXTS[i])
  assert source._getitems([5, 3, 299]) == [source[5], source[3], source[299]]
  for bad in (NUM_ARTICLES, -1):
    with pytest.raises(IndexError, match="out of range"):
      source[bad]


def test_grain_shard_reads_only_its_share(source, tokenizer):
  reader = array_record_data_source.ArrayRecordDataSource
  with mock.patch.object(reader, "__getitem__", autospec=True,
                         side_effect=reader.__getitem__) as read_one, \
       mock.patch.object(reader, "__getitems__", autospec=True,
                         side_effect=reader.__getitems__) as read_many:
    shard = grain.MapDataset.source(source)[1::4]
    assert len(shard) == NUM_ARTICLES // 4
    assert read_one.call_count == read_many.call_count == 0, "slicing reads nothing"
    batches = list(pipeline.training_dataset(shard, tokenizer, seq_len=32, batch_size=4, seed=0,
                                             num_epochs=1, packing_bins=8))
  share = set(range(1, NUM_ARTICLES, 4))
  read = [c.args[1] for c in read_one.call_args_list]
  read += [k for c in read_many.call_args_list for k in c.args[1]]
  assert sorted(read) == sorted(share), "each record of the share is read once, no others"
  trained = {int(s) for b in batches for s in b["source_ids"][b["segment_ids"] > 0]}
  assert trained <= share and len(trained) > len(share) // 2


def test_source_pickles_for_grain_workers(source):
  clone = pickle.loads(pickle.dumps(source))
  assert len(clone) == NUM_ARTICLES
  assert clone[42] == source[42]


@pytest.mark.parametrize("name", [wikipedia.DEFAULT_NAME, "wikipedia/20230601.en"])
def test_missing_dataset_says_where_and_how_to_prepare(tmp_path, name):
  with pytest.raises(FileNotFoundError) as e:
    WikipediaSource(name, data_dir=tmp_path)
  assert str(tmp_path) in str(e.value)
  assert f"tfds build {name} --data_dir={tmp_path} --file_format=array_record" in str(e.value)


def test_reading_never_imports_tensorflow(data_dir):
  script = textwrap.dedent(f"""
      import sys
      from nullearn.data.wikipedia import WikipediaSource
      source = WikipediaSource(data_dir={str(data_dir)!r})
      assert source[3].source == {TITLES[3]!r}
      assert len(source._getitems([1, 2])) == 2
      loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
      assert not loaded, loaded
      """)
  run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr[-2000:]


def test_mocked_source_yields_the_mocked_records(mock_source):
  src, raw = mock_source
  assert len(src) == MOCK_ARTICLES
  for i in (0, 1, 250, MOCK_ARTICLES - 1):
    assert src[i] == Document(i, raw[i]["title"], raw[i]["text"])


def test_title_index_round_trips_every_title(mock_source, tmp_path):
  src, raw = mock_source
  titles = [raw[i]["title"] for i in range(MOCK_ARTICLES)]
  assert len(set(titles)) == MOCK_ARTICLES
  index = TitleIndex.build(src, tmp_path / "index")
  reopened = TitleIndex.open(tmp_path / "index", src)
  assert len(reopened) == MOCK_ARTICLES
  assert [reopened.lookup(t) for t in titles] == list(range(MOCK_ARTICLES))
  assert index.lookup(titles[17]) == 17
  for unknown in ("Not an article", titles[0] + "x", titles[0].upper()):
    with pytest.raises(UnknownTitleError, match="no article is titled"):
      reopened.lookup(unknown)


def _few_hashes(title: str) -> int:
  return sum(title.encode()) % 16  # ~19 titles per hash


def test_title_index_checks_titles_when_hashes_collide(source, tmp_path, monkeypatch):
  monkeypatch.setattr(wikipedia, "_title_hash", _few_hashes)
  index = TitleIndex.build(source, tmp_path)
  assert [index.lookup(t) for t in TITLES] == list(range(NUM_ARTICLES))
  unknown = "Article 1000"
  assert any(_few_hashes(t) == _few_hashes(unknown) for t in TITLES)
  with pytest.raises(UnknownTitleError):
    index.lookup(unknown)


def test_title_index_refuses_a_missing_or_stale_index(source, tmp_path):
  with pytest.raises(FileNotFoundError, match="TitleIndex.build"):
    TitleIndex.open(tmp_path, source)
  TitleIndex.build(_SyntheticCorpus(10), tmp_path)
  with pytest.raises(ValueError, match="covers 10 records but the source has 300"):
    TitleIndex.open(tmp_path, source)


def test_title_index_memory_does_not_grow_with_the_corpus(tmp_path):
  corpus = _SyntheticCorpus(100_000)
  TitleIndex.build(corpus, tmp_path)
  tracemalloc.start()
  try:
    index = TitleIndex.open(tmp_path, corpus)
    assert index.lookup("Title 99999") == 99_999
    assert index.lookup("Title 0") == 0
    held, _ = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  on_disk = len(corpus) * (8 + 4)
  assert held < on_disk // 50, f"the index holds {held} bytes in memory for {on_disk} on disk"


def test_sample_texts_draws_distinct_articles_reproducibly(source):
  sample = wikipedia.sample_texts(source, 20, seed=0)
  assert len(set(sample)) == 20 and set(sample) <= set(TEXTS)
  assert wikipedia.sample_texts(source, 20, seed=0) == sample
  assert wikipedia.sample_texts(source, 20, seed=1) != sample
  assert sorted(wikipedia.sample_texts(source, 10 * NUM_ARTICLES, seed=0)) == sorted(TEXTS)
  with pytest.raises(ValueError, match="at least 1"):
    wikipedia.sample_texts(source, 0, seed=0)


def test_tiny_config_names_the_tfds_corpus(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/tfds")
  c = wikipedia_tiny.get_config()
  assert c.data.corpus == "tfds:" + wikipedia.DEFAULT_NAME
  assert c.data.tfds_data_dir == "gs://bucket/tfds"
  assert c.train.steps > 0, "counting epochs would tokenize the whole corpus first"
  ModelConfig.from_config(c.model)
  monkeypatch.delenv("TFDS_DATA_DIR")
  c = wikipedia_tiny.get_config()
  assert c.data.tfds_data_dir == "", "'' means TFDS's default directory"
  with pytest.raises(ValueError, match="unknown variant"):
    wikipedia_tiny.get_config("plain")


def test_corpus_from_a_tfds_spec_stays_lazy(data_dir, tmp_path):
  """`tfds:` configs give a lazy corpus: ids checked by range, names via the title index."""
  c = wikipedia_tiny.get_config()
  c.data.tfds_data_dir = str(data_dir)
  corpus = corpus_lib.load(c)
  assert not corpus.in_memory and len(corpus.documents) == NUM_ARTICLES
  assert corpus_lib.resolve_sources(corpus, [0, "12"]) == [0, 12]
  with pytest.raises(ValueError, match="not in the corpus"):
    corpus_lib.resolve_sources(corpus, [NUM_ARTICLES])
  with pytest.raises(ValueError, match="title index"):
    corpus_lib.resolve_sources(corpus, [TITLES[3]])
  TitleIndex.build(corpus.documents, tmp_path / "titles")
  c.data.title_index = str(tmp_path / "titles")
  corpus = corpus_lib.load(c)
  assert corpus_lib.resolve_sources(corpus, [TITLES[3], TITLES[7]]) == [3, 7]
  c.data.exclude_sources = (1, TITLES[2])
  kept = corpus_lib.training_set(corpus, c).documents
  assert isinstance(kept, grain.MapDataset)
  ids = [d.source_id for d in kept.to_iter_dataset()]
  assert ids == [i for i in range(NUM_ARTICLES) if i not in (1, 2)]
  c.tokenizer.sample_docs = 10
  texts = list(corpus_lib.tokenizer_texts(corpus, c))
  assert len(texts) == 10 and set(texts) <= set(TEXTS)


def test_wikipedia_tiny_trains_on_the_local_copy(data_dir, tmp_path):
  """The pod's data path end to end on a CPU: TFDS source -> tokenizer sample -> Grain -> steps."""
  from nullearn import train
  from nullearn.data.tokenizer import train_tokenizer
  c = wikipedia_tiny.get_config()
  c.data.tfds_data_dir = str(data_dir)
  c.tokenizer.sample_docs = 100
  c.train.update(dict(steps=3, log_every=1, progress=False))
  c.model.vocab_size = 512
  c.mesh.update(dict(data=1, fsdp=1, tensor=1))
  corpus = corpus_lib.load(c)
  tok = train_tokenizer(corpus_lib.tokenizer_texts(corpus, c), 512)
  c.data.exclude_sources = (5,)
  result = train.train(c, tmp_path, corpus, tok)
  assert int(result.state.step) == 3 and np.isfinite(result.history[-1]["loss"])
