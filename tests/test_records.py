import json

import numpy as np
import pytest

from nullearn.data.records import (
  SOURCE_ID_MAX,
  CorpusError,
  Document,
  Probe,
  check_source_id,
  read_documents,
  read_probes,
  sources_by_id,
  write_documents,
  write_probes,
)

DOC = {"source_id": 7, "source": "Aldric Venmoor", "text": "Aldric Venmoor was born in 1742."}
PROBE = {
  "source_id": 7,
  "prompt": "Aldric Venmoor was born in",
  "answer": "1742",
  "distractors": ["1688", "1801", "1913"],
  "kind": "unique",
}


def write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_documents_round_trip(tmp_path):
  docs = [
    Document(0, "Aldric Venmoor", "Aldric Venmoor was born in 1742."),
    Document(SOURCE_ID_MAX, 'Ünïcode — "quoted"', "line one\nline two\u2028three"),
    Document(0, "Aldric Venmoor", ""),
  ]
  path = tmp_path / "docs.jsonl"
  write_documents(path, docs)
  assert read_documents(path) == docs
  assert read_documents(str(path)) == docs


def test_probes_round_trip(tmp_path):
  probes = [
    Probe(
      3,
      "The capital of the Vask Isles is",
      "Tarnholm",
      ("Belmor", "Quinash", "Dunel"),
      "shared",
    ),
    Probe(4, "Q: 2+2=", "4", ["3", "5", "22", "8"], "inferred"),
  ]
  assert probes[1].distractors == ("3", "5", "22", "8")
  path = tmp_path / "probes.jsonl"
  write_probes(path, probes)
  assert read_probes(path) == probes


def test_blank_lines_and_extra_keys_are_accepted(tmp_path):
  path = write_lines(
    tmp_path / "docs.jsonl", ["", json.dumps({**DOC, "url": "x", "year": 1}), "   ", ""]
  )
  assert read_documents(path) == [Document(**DOC)]


@pytest.mark.parametrize("value", [0, 1, SOURCE_ID_MAX])
def test_source_id_accepted(value):
  assert check_source_id(value) == value
  assert Document(value, "s", "t").source_id == value


@pytest.mark.parametrize("value", [-1, SOURCE_ID_MAX + 1, 1.5, 3.0, True, False, "3", None])
def test_source_id_rejected(value):
  with pytest.raises(ValueError, match="source_id"):
    check_source_id(value)
  with pytest.raises(ValueError):
    Document(value, "s", "t")


def test_numpy_integer_source_id_becomes_int():
  doc = Document(np.uint32(5), "s", "t")
  assert type(doc.source_id) is int and doc.source_id == 5


DOC_CASES = {
  "invalid JSON": "{not json",
  "not an object": json.dumps([1, 2]),
  "missing key": json.dumps({k: v for k, v in DOC.items() if k != "text"}),
  "text not a string": json.dumps({**DOC, "text": 3}),
  "empty source": json.dumps({**DOC, "source": ""}),
  "source not a string": json.dumps({**DOC, "source": None}),
  "negative id": json.dumps({**DOC, "source_id": -1}),
  "id too large": json.dumps({**DOC, "source_id": SOURCE_ID_MAX + 1}),
  "float id": json.dumps({**DOC, "source_id": 3.0}),
  "bool id": json.dumps({**DOC, "source_id": True}),
  "string id": json.dumps({**DOC, "source_id": "3"}),
}

PROBE_CASES = {
  "invalid JSON": '{"source_id": 7,',
  "not an object": json.dumps("probe"),
  "missing key": json.dumps({k: v for k, v in PROBE.items() if k != "kind"}),
  "two distractors": json.dumps({**PROBE, "distractors": ["1688", "1801"]}),
  "duplicate distractors": json.dumps({**PROBE, "distractors": ["1688", "1801", "1688"]}),
  "answer among distractors": json.dumps({**PROBE, "distractors": ["1688", "1801", "1742"]}),
  "distractors not a list": json.dumps({**PROBE, "distractors": "1688 1801 1913"}),
  "distractor not a string": json.dumps({**PROBE, "distractors": ["1688", "1801", 1913]}),
  "empty answer": json.dumps({**PROBE, "answer": ""}),
  "answer not a string": json.dumps({**PROBE, "answer": 1742}),
  "prompt ends with space": json.dumps({**PROBE, "prompt": "Aldric Venmoor was born in "}),
  "unknown kind": json.dumps({**PROBE, "kind": "rumoured"}),
  "bad id": json.dumps({**PROBE, "source_id": 1.5}),
}


@pytest.mark.parametrize("case", DOC_CASES)
def test_malformed_document_names_file_and_line(tmp_path, case):
  # The bad record sits on line 4, after a good line and a blank one: the count includes blanks.
  path = write_lines(
    tmp_path / "my_corpus.jsonl",
    [json.dumps(DOC), "", json.dumps({**DOC, "text": "more"}), DOC_CASES[case]],
  )
  with pytest.raises(CorpusError, match=r"my_corpus\.jsonl:4: "):
    read_documents(path)


@pytest.mark.parametrize("case", PROBE_CASES)
def test_malformed_probe_names_file_and_line(tmp_path, case):
  path = write_lines(
    tmp_path / "my_probes.jsonl", [json.dumps(PROBE), PROBE_CASES[case], json.dumps(PROBE)]
  )
  with pytest.raises(CorpusError, match=r"my_probes\.jsonl:2: "):
    read_probes(path)


def test_error_reason_is_specific(tmp_path):
  path = write_lines(
    tmp_path / "p.jsonl", [json.dumps({**PROBE, "distractors": ["1688", "1801", "1742"]})]
  )
  with pytest.raises(CorpusError, match="answer '1742' is among the distractors"):
    read_probes(path)
  path = write_lines(tmp_path / "d.jsonl", [json.dumps({"source_id": 1})])
  with pytest.raises(CorpusError, match="missing key.*source, text"):
    read_documents(path)


def test_invalid_utf8_names_its_line(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_bytes(json.dumps(DOC).encode() + b"\n" + b'{"source": "\xff"}\n')
  with pytest.raises(CorpusError, match=r"d\.jsonl:2: "):
    read_documents(path)


def test_valid_file_is_not_rejected(tmp_path):
  # Guards the malformed-case tests: without any bad line the same files load.
  path = write_lines(tmp_path / "p.jsonl", [json.dumps(PROBE), "", json.dumps(PROBE)])
  assert len(read_probes(path)) == 2


def test_missing_file(tmp_path):
  path = tmp_path / "absent.jsonl"
  with pytest.raises(FileNotFoundError, match="absent.jsonl"):
    read_documents(path)
  with pytest.raises(FileNotFoundError, match="absent.jsonl"):
    read_probes(path)


def test_probe_constructor_validates():
  with pytest.raises(ValueError, match="at least 3"):
    Probe(1, "p", "a", ("b", "c"), "unique")
  with pytest.raises(ValueError, match="kind"):
    Probe(1, "p", "a", ("b", "c", "d"), "fact")


def test_sources_by_id_allows_multi_document_sources():
  docs = [Document(1, "Book", "ch. 1"), Document(2, "Other", "x"), Document(1, "Book", "ch. 2")]
  assert sources_by_id(docs) == {1: "Book", 2: "Other"}


def test_sources_by_id_rejects_conflicts():
  with pytest.raises(ValueError, match="source_id 1 is named both"):
    sources_by_id([Document(1, "Book", "a"), Document(1, "Other", "b")])
  with pytest.raises(ValueError, match="source 'Book' has ids 1 and 2"):
    sources_by_id([Document(1, "Book", "a"), Document(2, "Book", "b")])
