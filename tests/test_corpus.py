import pytest

from conftest import small_config
from nullearn.data import corpus as corpus_lib
from nullearn.data import records


@pytest.fixture
def corpus():
  return corpus_lib.load(small_config())


def test_resolve_by_id_and_name(corpus):
  name = corpus.documents[3].source
  assert corpus_lib.resolve_sources(corpus, [3, "5", name]) == [3, 5, corpus.documents[3].source_id]


def test_unknown_source_name_is_a_clear_error(corpus):
  name = corpus.documents[0].source
  with pytest.raises(ValueError, match="unknown source .*did you mean"):
    corpus_lib.resolve_sources(corpus, [name[:-1] + "x"])


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_out_of_range_id_is_a_clear_error(corpus, bad):
  with pytest.raises(ValueError, match=r"source_id must be in \[0"):
    corpus_lib.resolve_sources(corpus, [bad])


def test_id_not_in_corpus(corpus):
  with pytest.raises(ValueError, match="not in the corpus"):
    corpus_lib.resolve_sources(corpus, [999])


def test_jsonl_corpus_and_malformed_line(tmp_path, world):
  path = tmp_path / "docs.jsonl"
  records.write_documents(path, world.documents[:5])
  c = small_config()
  c.data.corpus = str(path)
  assert len(corpus_lib.load(c).documents) == 5
  with open(path, "a") as f:
    f.write('{"source_id": 9, "source": "x"}\n')
  with pytest.raises(records.CorpusError, match=r"docs.jsonl:6: .*text"):
    corpus_lib.load(c)


def test_unknown_corpus_spec():
  c = small_config()
  c.data.corpus = "wikipedia"
  with pytest.raises(ValueError, match="unknown corpus"):
    corpus_lib.load(c)
