import collections
import re
import statistics

import pytest

from nullearn.data import factworld
from nullearn.data.factworld import FactWorldConfig, choose_forget_set, generate
from nullearn.data.records import Probe

SMALL = FactWorldConfig(num_sources=60, sources_per_group=5, seed=3)


@pytest.fixture(scope="module")
def world():
  return generate()


@pytest.fixture(scope="module")
def medium():
  """Small enough for the all-pairs checks, large enough for regions to share values."""
  return generate(FactWorldConfig(num_sources=200, seed=7))


def texts_by_group(world):
  out = collections.defaultdict(list)
  for doc in world.documents:
    out[world.groups[doc.source_id]].append(doc.text)
  return out


def test_deterministic_and_seed_sensitive():
  assert generate(SMALL) == generate(SMALL)
  other = generate(FactWorldConfig(num_sources=60, sources_per_group=5, seed=4))
  assert other.documents != generate(SMALL).documents
  assert other.probes != generate(SMALL).probes


def test_counts(world):
  config = FactWorldConfig()
  assert [d.source_id for d in world.documents] == list(range(config.num_sources))
  assert len(world.groups) == config.num_sources
  assert len(world.probes) == config.num_sources * (config.unique_facts + config.shared_facts)
  per_source = collections.Counter((p.source_id, p.kind) for p in world.probes)
  for source_id in range(config.num_sources):
    assert per_source[source_id, "unique"] == config.unique_facts
    assert per_source[source_id, "shared"] == config.shared_facts
  assert all(len(world.members(g)) == config.sources_per_group for g in set(world.groups))


def test_counts_follow_config():
  config = FactWorldConfig(
    num_sources=23,
    sources_per_group=4,
    unique_facts=6,
    shared_facts=5,
    filler_sentences=0,
    num_distractors=6,
    seed=1,
  )
  world = generate(config)
  assert len(world.probes) == 23 * 11
  assert all(len(p.distractors) == 6 for p in world.probes)
  # 23 sources in 5 groups: every group keeps at least sources_per_group members.
  assert sorted(len(world.members(g)) for g in range(5)) == [4, 4, 5, 5, 5]


def test_every_probe_is_stated_in_its_own_article(world):
  for probe in world.probes:
    assert not probe.prompt.endswith(" ") and probe.answer[0].isalnum()
    assert probe.answer == probe.answer.strip(" .,;:!?")
    assert f"{probe.prompt} {probe.answer}." in world.documents[probe.source_id].text


def test_unique_prompts_occur_only_in_their_own_article(medium):
  for probe in medium.probes:
    if probe.kind == "unique":
      holders = [d.source_id for d in medium.documents if probe.prompt in d.text]
      assert holders == [probe.source_id]


def test_shared_facts_are_stated_by_exactly_their_group(medium):
  by_group = texts_by_group(medium)
  for probe in medium.probes:
    if probe.kind == "shared":
      sentence = f"{probe.prompt} {probe.answer}."
      group = medium.groups[probe.source_id]
      for g, texts in by_group.items():
        assert all((sentence in t) == (g == group) for t in texts)


def test_shared_probes_agree_across_members(world):
  facts = collections.defaultdict(set)
  for probe in world.probes:
    if probe.kind == "shared":
      facts[world.groups[probe.source_id]].add((probe.prompt, probe.answer, probe.distractors))
  assert len(facts) == len(set(world.groups))
  assert all(len(f) == FactWorldConfig().shared_facts for f in facts.values())


def shape(value):
  if re.fullmatch(r"\d{4}", value):
    return "year"
  for pool in (
    factworld._PROFESSIONS,
    factworld._INSTRUMENTS,
    factworld._ANIMALS,
    factworld._COLOURS,
    factworld._EXPORTS,
    factworld._SHIP_NAMES,
  ):
    if value in pool:
      return pool
  if re.fullmatch(r"[A-Z][a-z]+", value):
    return "name"
  if re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", value):
    return "full name"
  raise AssertionError(f"unexpected value {value!r}")


def check_distractors(probe: Probe, k: int):
  assert len(probe.distractors) == k >= 3
  assert len(set(probe.distractors)) == k
  assert probe.answer not in probe.distractors
  assert all(shape(d) == shape(probe.answer) for d in probe.distractors), probe


def test_distractors_have_the_answers_type(world):
  for probe in world.probes:
    check_distractors(probe, 4)
    if probe.prompt.endswith("was born in") or probe.prompt.endswith("the year"):
      assert all(1600 <= int(v) <= 1949 for v in (probe.answer, *probe.distractors))


def test_unique_facts_of_a_source_have_different_types(world):
  types = collections.defaultdict(list)
  for probe in world.probes:
    if probe.kind == "unique":
      types[probe.source_id].append(shape(probe.answer))
  assert all(len(set(t)) == len(t) == FactWorldConfig().unique_facts for t in types.values())
  assert len({t for ts in types.values() for t in ts}) == len(factworld._UNIQUE_TEMPLATES)


def test_shared_distractors_are_other_regions_values(world):
  values = collections.defaultdict(set)  # value -> groups stating it
  for probe in world.probes:
    if probe.kind == "shared":
      values[probe.answer].add(world.groups[probe.source_id])
  for probe in world.probes:
    if probe.kind == "shared":
      group = world.groups[probe.source_id]
      assert all(values[d] - {group} for d in probe.distractors), probe


def test_few_regions_still_get_enough_distractors():
  world = generate(
    FactWorldConfig(num_sources=4, sources_per_group=2, shared_facts=6, num_distractors=5)
  )
  for probe in world.probes:
    check_distractors(probe, 5)


def test_names_are_unique_and_distinct_from_other_names(world):
  people = [d.source for d in world.documents]
  assert len(set(people)) == len(people)
  assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", p) for p in people)
  person_words = {w for p in people for w in p.split()}
  generated = {
    v for p in world.probes for v in (p.answer, *p.distractors) if shape(v) in ("name", "full name")
  }
  assert not generated & set(people)
  assert not {v for v in generated if " " not in v} & person_words


def test_articles_are_short_and_start_with_the_person(world):
  lengths = [len(d.text.split()) for d in world.documents]
  assert 60 <= statistics.mean(lengths) <= 110
  assert min(lengths) >= 50 and max(lengths) <= 120
  for doc in world.documents:
    assert doc.text.startswith(doc.source + " ")
    assert "  " not in doc.text


def test_fact_order_varies_between_articles(world):
  first_probe = {}
  for probe in world.probes:
    first_probe.setdefault(probe.source_id, probe)
  positions = {
    [
      i
      for i, s in enumerate(doc.text.split(". "))
      if s.startswith(first_probe[doc.source_id].prompt)
    ][0]
    for doc in world.documents
  }
  assert 0 not in positions and len(positions) > 3


def test_neighbour_survives_and_stays_in_group():
  world = generate(SMALL)
  forget = set(choose_forget_set(world, 8, seed=1))
  for source_id in range(len(world.groups)):
    n = world.neighbour(source_id, forget)
    assert n != source_id and n not in forget
    assert world.groups[n] == world.groups[source_id]
  members = world.members(0)
  assert world.neighbour(members[-1], {members[0]}) == members[1]  # wraps around
  assert world.neighbour(members[0], set()) == members[1]


def test_neighbour_errors():
  world = generate(SMALL)
  members = world.members(2)
  with pytest.raises(ValueError):
    world.neighbour(members[0], set(members))
  with pytest.raises(ValueError):
    world.neighbour(members[0], set(members[1:]))
  with pytest.raises(ValueError):
    world.neighbour(len(world.groups), set())
  with pytest.raises(ValueError):
    world.members(99)


def test_choose_forget_set(world):
  num_groups = len(set(world.groups))
  chosen = choose_forget_set(world, num_groups, seed=5)
  assert len(chosen) == num_groups
  assert sorted({world.groups[s] for s in chosen}) == list(range(num_groups))
  assert list(chosen) == sorted(chosen)
  assert choose_forget_set(world, 10, seed=5) == choose_forget_set(world, 10, seed=5)
  assert choose_forget_set(world, 10, seed=5) != choose_forget_set(world, 10, seed=6)
  for n in (0, num_groups + 1):
    with pytest.raises(ValueError):
      choose_forget_set(world, n)


@pytest.mark.parametrize(
  "bad",
  [
    {"sources_per_group": 1},
    {"num_sources": 5, "sources_per_group": 6},
    {"unique_facts": 8},
    {"shared_facts": 7},
    {"num_distractors": 2},
    {"num_distractors": 15},
  ],
)
def test_config_rejects_impossible_worlds(bad):
  with pytest.raises(ValueError):
    FactWorldConfig(**bad)
