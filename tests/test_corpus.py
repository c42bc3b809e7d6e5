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


@pytest.mark.parametrize(
  "lines,match",
  [
    ([], r"docs.jsonl: no documents"),
    (
      [
        '{"source_id": 1, "source": "A", "text": "x"}',
        '{"source_id": 1, "source": "A", "text": "x"}',
      ],
      r"docs.jsonl:2: duplicate of line 1",
    ),
    (
      [
        '{"source_id": 1, "source": "A", "text": "x"}',
        '{"source_id": 1, "source": "B", "text": "y"}',
      ],
      r"docs.jsonl:2: source_id 1 is named 'A' on line 1, 'B' here",
    ),
    (
      [
        '{"source_id": 1, "source": "A", "text": "x"}',
        '{"source_id": 2, "source": "A", "text": "y"}',
      ],
      r"docs.jsonl:2: source 'A' has source_id 1 on line 1, 2 here",
    ),
  ],
)
def test_inconsistent_documents_name_their_lines(tmp_path, lines, match):
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(line + "\n" for line in lines))
  c = small_config()
  c.data.corpus = str(path)
  with pytest.raises(records.CorpusError, match=match):
    corpus_lib.load(c)


def test_probes_of_sources_without_documents_are_refused(tmp_path, world):
  docs, probes = tmp_path / "docs.jsonl", tmp_path / "probes.jsonl"
  records.write_documents(docs, world.documents[:5])
  records.write_probes(probes, [p for p in world.probes if p.source_id < 6])
  c = small_config()
  c.data.corpus, c.data.probes = str(docs), str(probes)
  bad_line = 1 + next(
    i for i, p in enumerate(p for p in world.probes if p.source_id < 6) if p.source_id == 5
  )
  with pytest.raises(
    records.CorpusError, match=rf"probes.jsonl:{bad_line}: source_id 5 has no documents"
  ):
    corpus_lib.load(c)


@pytest.mark.parametrize("answer", ["   ", "\t"])
def test_blank_answers_are_refused(answer):
  with pytest.raises(ValueError, match="answer must not be empty or blank"):
    records.Probe(0, "The capital is", answer, ("a", "b", "c"), "unique")
