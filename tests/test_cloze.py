"""Automatic cloze probes: spans, distractors and shared facts, on small corpora and on WikiText."""

import collections
import pathlib
import re

import pytest

from nullearn.data import cloze, records, wikitext
from nullearn.data.records import Document

VALID = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "valid.txt"
TOWNS = ("Bergen", "Tromso", "Aalborg", "Uppsala", "Turku", "Tartu")


def _corpus(*texts: str) -> list[Document]:
  """The given sources, then fillers that give every span type enough distractors."""
  fillers = [
    f"The small museum in the valley opened its doors in {1950 + i} to visitors .\n"
    f"The old library in the village holds {100 + i} rare books .\n"
    f"Every summer the local choir travels to {town} for a festival ."
    for i, town in enumerate(TOWNS)
  ]
  return [Document(i, f"source {i}", text) for i, text in enumerate([*texts, *fillers])]


def _kind(span: str) -> str:
  if re.fullmatch(r"1\d{3}|20\d{2}", span):
    return cloze.YEAR
  if re.fullmatch(r"\d+(?:[.,]\d+)*", span):
    return cloze.NUMBER
  assert span[0].isupper(), span
  return cloze.NAME


def _by_answer(probes, source_id):
  return {p.answer: p for p in probes if p.source_id == source_id}


def test_salient_spans_and_their_prompts():
  docs = _corpus(
    "Farmers say the army crossed the river before the Battle of the Somme began .\n"
    "It is closely related to the lobster H. americanus found near Boston , and Maine .\n"
    "Oslo is large , and the fleet sailed past Cape <unk> towards the open sea .\n"
    "In spring the council finally agreed to spend 2,500 crowns on the bridge .\n"
    "At the fair the visitors sang \" Going Home \" , as they were going home ."
  )
  probes = _by_answer(cloze.make_probes(docs, per_source=50, min_prompt_words=1), 0)
  assert probes["Battle of the Somme"].prompt == "Farmers say the army crossed the river before the"
  assert probes["Boston"].prompt == "It is closely related to the lobster H. americanus found near"
  assert probes["Maine"].prompt == (
    "It is closely related to the lobster H. americanus found near Boston , and"
  )
  assert probes["2,500"].prompt == "In spring the council finally agreed to spend"
  # Names never start a sentence, touch <unk>, or consist of words the corpus writes in lower case.
  assert not {"Oslo", "Cape", "Farmers", "In", "H", "Battle", "Going Home", "Going"} & set(probes)
  assert not [answer for answer in probes if cloze.UNK in answer]


def test_min_prompt_words():
  docs = _corpus("The old lighthouse keeper then moved to Oslo in 1921 with his family .")
  assert set(_by_answer(cloze.make_probes(docs, per_source=50), 0)) == {"Oslo", "1921"}
  assert set(_by_answer(cloze.make_probes(docs, per_source=50, min_prompt_words=8), 0)) == {"1921"}


def test_shared_when_answer_and_context_recur_in_another_source():
  docs = _corpus(
    "The treaty of peace was signed in Paris in 1904 by both kings .",
    "Historians agree the treaty was signed in Paris in 1904 after long talks .",
    "The new bridge across the river was finished in 1904 after many delays .",
    "The old lighthouse keeper then moved to Oslo in 1921 with his family .\n"
    "Years later the old lighthouse keeper then moved to Oslo in 1921 again .",
  )
  probes = cloze.make_probes(docs, per_source=50)
  kinds = {(p.source_id, p.answer): p.kind for p in probes}
  assert kinds[0, "1904"] == kinds[1, "1904"] == "shared"  # "signed in Paris in 1904"
  assert kinds[0, "Paris"] == kinds[1, "Paris"] == "shared"  # "was signed in Paris"
  assert kinds[2, "1904"] == "unique"  # the same year after other words
  assert kinds[3, "1921"] == kinds[3, "Oslo"] == "unique"  # repeated only within its own source
  assert {p.kind for p in probes if p.source_id > 3} == {"unique"}


def test_every_source_asks_its_shared_facts_beside_its_own():
  own = "\n".join(f"In that year the old keeper counted {i + 3} ships ." for i in range(12))
  docs = _corpus(
    own + "\nThe treaty of peace was signed in Paris in 1904 by both kings .",
    "Historians agree the treaty was signed in Paris in 1904 after long talks .",
  )
  mine = [p for p in cloze.make_probes(docs, per_source=3, shared_per_source=1) if p.source_id == 0]
  # Three of the twelve own facts, then one of the two shared ones, which come last in the text.
  assert [p.kind for p in mine] == ["unique"] * 3 + ["shared"]
  assert mine[-1].answer in {"Paris", "1904"}
  assert {p.kind for p in cloze.make_probes(docs, shared_per_source=0)} == {"unique"}
  assert cloze.shared_facts(docs) == {"was signed in Paris": {0, 1}, "in Paris in 1904": {0, 1}}


def test_distractors_are_other_sources_spans_of_the_same_type():
  docs = _corpus("The treaty of peace was finally signed in Paris in 1904 by both kings .")
  probes = cloze.make_probes(docs, per_source=50, num_distractors=5)
  assert probes
  for p in probes:
    assert len(p.distractors) == 5
    assert all(_kind(d) == _kind(p.answer) for d in p.distractors)
    own = docs[p.source_id].text
    assert not any(re.search(rf"(?<!\S){re.escape(d)}(?!\S)", own) for d in p.distractors)
  assert set(_by_answer(probes, 0)["Paris"].distractors) <= set(TOWNS)


def test_bad_arguments():
  docs = _corpus("The treaty of peace was finally signed in Paris in 1904 by both kings .")
  with pytest.raises(ValueError, match="num_distractors must be at least 3"):
    cloze.make_probes(docs, num_distractors=2)
  with pytest.raises(ValueError, match="per_source must be at least 1"):
    cloze.make_probes(docs, per_source=0)
  with pytest.raises(ValueError, match="shared_per_source must be at least 0"):
    cloze.make_probes(docs, shared_per_source=-1)
  with pytest.raises(ValueError, match="needs documents"):
    cloze.make_probes([])
  with pytest.raises(ValueError, match="named both"):
    cloze.make_probes([*docs, Document(0, "another name", "text")])


@pytest.fixture(scope="module")
def valid_docs():
  if not VALID.exists():
    pytest.skip(
      f"{VALID} is absent: the real-data tests need the shared data folder next to the repo"
    )
  return wikitext.wikitext_documents([VALID])


@pytest.fixture(scope="module")
def valid_probes(valid_docs):
  return cloze.make_probes(valid_docs)


def test_real_probes_are_well_formed(valid_docs, valid_probes, tmp_path):
  texts = {d.source_id: d.text for d in valid_docs}
  records.write_probes(tmp_path / "probes.jsonl", valid_probes)
  assert records.read_probes(tmp_path / "probes.jsonl") == valid_probes  # validated at load
  for p in valid_probes:
    assert f"{p.prompt} {p.answer}" in texts[p.source_id]
    assert len(re.findall(r"[^\W_]+", p.prompt)) >= 6
    assert p.answer[-1].isalnum() and cloze.UNK not in p.answer
    assert all(_kind(d) == _kind(p.answer) for d in p.distractors)
    others = [text for sid, text in texts.items() if sid != p.source_id]
    assert all(any(d in text for text in others) for d in p.distractors)
  per_kind = collections.Counter((p.source_id, p.kind) for p in valid_probes)
  assert max(n for (_, kind), n in per_kind.items() if kind == "unique") == 8
  assert max(n for (_, kind), n in per_kind.items() if kind == "shared") == 2
  assert len({p.source_id for p in valid_probes}) == len(valid_docs)
  assert {p.kind for p in valid_probes} == {"unique", "shared"}
  assert {_kind(p.answer) for p in valid_probes} == {cloze.YEAR, cloze.NUMBER, cloze.NAME}


def test_one_probe_from_each_stretch_of_a_source():
  docs = _corpus(
    "\n".join(f"On that day the old keeper counted {i + 3} ships ." for i in range(80))
  )
  probes = [p for p in cloze.make_probes(docs, per_source=8) if p.source_id == 0]
  assert sorted((int(p.answer) - 3) // 10 for p in probes) == list(range(8))


def test_real_probes_reach_past_the_middle_of_each_source(valid_docs, valid_probes):
  texts = {d.source_id: d.text for d in valid_docs}
  positions = collections.defaultdict(list)
  for p in valid_probes:
    text = texts[p.source_id]
    positions[p.source_id].append(text.index(f"{p.prompt} {p.answer}") / len(text))
  assert all(max(pos) > 0.5 for pos in positions.values())


def test_probes_state_facts_of_their_own_text(valid_docs, valid_probes):
  texts = {d.source_id: d.text for d in valid_docs}
  for p in valid_probes:
    assert f"{p.prompt} {p.answer}" in texts[p.source_id]


def test_deterministic_in_seed(valid_docs):
  docs = valid_docs[:15]
  probes = cloze.make_probes(docs, seed=3)
  assert cloze.make_probes(docs, seed=3) == probes
  other = cloze.make_probes(docs, seed=4)
  assert other != probes

  def facts(ps):
    return {(p.source_id, p.prompt, p.answer) for p in ps}

  assert facts(other) != facts(probes)
