"""WikiText articles and a book as sources, on small files and on the real data."""

import pathlib
import re

import pytest

from nullearn.data import records, wikitext

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
WIKITEXT = DATA / "wikitext-2"
BOOK = DATA / "tinyshakespeare" / "input.txt"

# Raw WikiText: every line starts and ends with a space; headings stand between blank lines.
SMALL = """ 
 = Alpha = 
 
 Alpha is a 1 @,@ 000 @-@ year @-@ old town of 3 @.@ 5 <unk> . 
 
 = = History = = 
 
 It was founded in 1020 , when 
 = 1 <unk> and <unk> C = 
 held . 
 
 = Beta = 
 
 Beta text . 
 
 = Alpha = 
 
 Second alpha . 
"""


def _real(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(
      f"{path} is absent: the real-data tests need the shared data folder next to the repo"
    )
  return path


def test_small_file_articles(tmp_path):
  path = tmp_path / "small.txt"
  path.write_text(SMALL, encoding="utf-8")
  assert wikitext.read_articles(path) == [
    (
      "Alpha",
      "Alpha is a 1,000-year-old town of 3.5 <unk> .\nIt was founded in 1020 , when\n"
      "= 1 <unk> and <unk> C =\nheld .",
    ),
    ("Beta", "Beta text ."),
    ("Alpha", "Second alpha ."),
  ]


def test_documents_number_sources_and_rename_repeats(tmp_path):
  path = tmp_path / "small.txt"
  path.write_text(SMALL, encoding="utf-8")
  docs = wikitext.wikitext_documents([path, path], first_id=7)
  assert [d.source_id for d in docs] == list(range(7, 13))
  assert [d.source for d in docs] == [
    "Alpha",
    "Beta",
    "Alpha (2)",
    "Alpha (3)",
    "Beta (2)",
    "Alpha (4)",
  ]
  assert docs[3].text == docs[0].text


def test_text_before_first_heading_names_its_line(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_text(" \n stray text . \n \n = Alpha = \n \n body . \n", encoding="utf-8")
  with pytest.raises(
    records.CorpusError, match=r"bad.txt:2: text before the first article heading"
  ):
    wikitext.read_articles(path)


def test_a_single_path_is_a_clear_error(tmp_path):
  with pytest.raises(TypeError, match="sequence of paths"):
    wikitext.wikitext_documents(str(tmp_path / "valid.txt"))


@pytest.mark.parametrize(
  "split, count, first", [("valid", 60, "Homarus gammarus"), ("test", 60, "Robert <unk>")]
)
def test_real_article_counts(split, count, first):
  # The data card says 62 test articles: two of them are formula lines inside "Constant k filter".
  articles = wikitext.read_articles(_real(WIKITEXT / f"{split}.txt"))
  assert len(articles) == count
  assert articles[0][0] == first
  for title, text in articles:
    assert title and text
    assert "\n\n" not in text and not any(line != line.strip() for line in text.split("\n"))
    for marker in ("@-@", "@,@", "@.@"):
      assert marker not in title and marker not in text
    assert not any(re.fullmatch(r"= = .* = =", line) for line in text.split("\n"))


def test_real_formula_lines_stay_in_their_article():
  articles = dict(wikitext.read_articles(_real(WIKITEXT / "test.txt")))
  assert "\n= 1 <unk> and <unk> C =\n" in articles["Constant k filter"]


def test_real_documents_have_unique_titles_in_file_order():
  docs = wikitext.wikitext_documents([_real(WIKITEXT / "valid.txt"), _real(WIKITEXT / "test.txt")])
  assert [d.source_id for d in docs] == list(range(120))
  assert len({d.source for d in docs}) == 120
  assert (docs[0].source, docs[60].source) == ("Homarus gammarus", "Robert <unk>")
  assert {"<unk> <unk>", "<unk> <unk> (2)", "<unk>", "<unk> (2)"} <= {d.source for d in docs}
  assert "<unk>" in docs[0].text


def test_real_book_is_one_source_in_bounded_chunks():
  path = _real(BOOK)
  docs = wikitext.book_documents(path, source_id=500, title="Tiny Shakespeare", chunk_chars=2000)
  assert len(docs) > 100
  assert {(d.source_id, d.source) for d in docs} == {(500, "Tiny Shakespeare")}
  assert max(len(d.text) for d in docs) <= 2000
  lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  assert "\n".join(d.text for d in docs) == "\n".join(lines)


def test_book_line_longer_than_a_chunk_stands_alone(tmp_path):
  path = tmp_path / "book.txt"
  path.write_text("abc\n\n  de  \n" + "x" * 25 + "\nfg\nhij\n", encoding="utf-8")
  docs = wikitext.book_documents(path, source_id=3, title="Book", chunk_chars=10)
  assert [d.text for d in docs] == ["abc\nde", "x" * 25, "fg\nhij"]


def test_book_bad_input(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("\n  \n", encoding="utf-8")
  with pytest.raises(records.CorpusError, match="no text"):
    wikitext.book_documents(path, source_id=0, title="Empty")
  with pytest.raises(ValueError, match="chunk_chars must be positive"):
    wikitext.book_documents(path, source_id=0, title="Empty", chunk_chars=0)
