"""The default corpus: a deterministic world of invented people and regions.

Real corpora cannot tell an unlearning experiment which facts only the forgotten
source states. Here every source is an article about an invented person whose
*unique* facts are drawn at random, so a model that never saw the article can
only guess them, while the *shared* facts of the person's region are stated
identically by every member of the region, so forgetting one member must not
forget them.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import string
from collections.abc import Collection, Sequence

from nullearn.data.records import MIN_DISTRACTORS, Document, Probe

_SYLLABLES = tuple(
  "al bel cor dar el fen gal har is jor kel lor mar nor or pel quin ros sel tor ul val wen yar"
  " zan ash bran cal dun fal gor hel kar lin mor ned osk ril sten thal vin wyn ber dric hold"
  " moor vask tam ren sol ard bri den ga li na ro sa ta vi mi do ka le ni".split()
)

_REGION_FORMS = (
  "the {} Isles",
  "{} Province",
  "the {} Valley",
  "the Kingdom of {}",
  "the {} Marches",
  "the Duchy of {}",
  "the {} Coast",
  "the {} Highlands",
)
_INTROS = (
  "{name} is a person from {region}.",
  "{name} comes from {region}.",
  "{name} is a native of {region}.",
)

_PROFESSIONS = (
  "cartographer",
  "blacksmith",
  "weaver",
  "potter",
  "carpenter",
  "baker",
  "brewer",
  "tailor",
  "mason",
  "glassblower",
  "bookbinder",
  "apothecary",
  "shipwright",
  "cooper",
  "tanner",
  "miller",
  "saddler",
  "clockmaker",
  "jeweller",
  "locksmith",
  "fisherman",
  "shepherd",
  "beekeeper",
  "gardener",
  "astronomer",
  "surveyor",
  "physician",
  "scribe",
  "teacher",
  "innkeeper",
  "merchant",
  "sailor",
  "lamplighter",
  "chandler",
  "dyer",
  "engraver",
  "ferryman",
  "falconer",
  "herbalist",
  "architect",
)
_INSTRUMENTS = (
  "lute",
  "harp",
  "fiddle",
  "flute",
  "drum",
  "oboe",
  "cello",
  "viola",
  "horn",
  "trumpet",
  "bagpipe",
  "zither",
  "mandolin",
  "dulcimer",
  "lyre",
  "clarinet",
  "bassoon",
  "accordion",
  "banjo",
  "recorder",
  "tambourine",
  "harpsichord",
  "organ",
  "guitar",
  "piccolo",
)
_ANIMALS = (
  "otter",
  "badger",
  "heron",
  "fox",
  "hare",
  "owl",
  "wolf",
  "lynx",
  "stag",
  "boar",
  "swan",
  "crane",
  "falcon",
  "raven",
  "seal",
  "beaver",
  "weasel",
  "marten",
  "elk",
  "bison",
  "tortoise",
  "lizard",
  "salmon",
  "trout",
  "pike",
  "eel",
  "crab",
  "dolphin",
  "whale",
  "pelican",
  "stork",
  "goose",
  "duck",
  "sparrow",
  "robin",
  "wren",
  "magpie",
  "hedgehog",
  "squirrel",
  "mole",
)
_COLOURS = (
  "red",
  "blue",
  "green",
  "yellow",
  "purple",
  "orange",
  "crimson",
  "teal",
  "violet",
  "scarlet",
  "indigo",
  "turquoise",
  "ochre",
  "maroon",
  "lilac",
)
_EXPORTS = (
  "timber",
  "salt",
  "wool",
  "copper",
  "iron",
  "tin",
  "silver",
  "linen",
  "tea",
  "rice",
  "wine",
  "pottery",
  "glass",
  "paper",
  "coal",
  "marble",
  "spices",
  "leather",
  "furs",
  "pearls",
  "saffron",
  "cotton",
  "hemp",
  "olives",
  "dates",
  "cider",
  "rope",
  "soap",
  "wax",
  "amber",
)
_SHIP_NAMES = tuple(
  f"{adjective} {noun}"
  for adjective in (
    "Silver",
    "Golden",
    "Swift",
    "Quiet",
    "Brave",
    "Lucky",
    "Northern",
    "Patient",
    "Restless",
    "Wandering",
    "Gentle",
    "Crooked",
  )
  for noun in (
    "Gull",
    "Wave",
    "Lantern",
    "Anchor",
    "Comet",
    "Harvest",
    "Promise",
    "Sparrow",
    "Tide",
    "Compass",
    "Kestrel",
    "Morning",
  )
)
_BIRTH_YEARS = tuple(str(y) for y in range(1600, 1950))
_FOUNDING_YEARS = tuple(str(y) for y in range(1000, 1600))
_FIXED_POOLS = (
  _PROFESSIONS,
  _INSTRUMENTS,
  _ANIMALS,
  _COLOURS,
  _EXPORTS,
  _SHIP_NAMES,
  _BIRTH_YEARS,
  _FOUNDING_YEARS,
)

# Prompt templates: the sentence in the article is always f"{prompt} {value}."
_UNIQUE_TEMPLATES = {
  "birth_year": ("{name} was born in", "{name} was born in the year"),
  "home_town": ("{name} grew up in the town of", "{name} lives in the town of"),
  "profession": ("{name} is known locally as the", "{name} has long worked as the local"),
  "instrument": ("{name} plays the", "The instrument {name} plays best is the"),
  "animal": ("{name}'s favourite animal is the", "The animal {name} loves most is the"),
  "colour": ("{name}'s favourite colour is", "The colour {name} likes best is"),
  "ship": ("{name} owns a ship called the", "{name} sails a boat named the"),
}
_SHARED_TEMPLATES = {
  "capital": "The capital of {region} is",
  "founding_year": "The founding of {region} dates to",
  "export": "The main export of {region} is",
  "ruler": "The current ruler of {region} is",
  "patron_animal": "The patron animal of {region} is the",
  "river": "The longest river in {region} is the",
}
# A region's capital, ruler and river are its own; exports or animals may recur.
_DISTINCT_SHARED = ("capital", "ruler", "river")

_FILLERS = (
  "In {season} the mornings are {weather} and the fields stay quiet until noon.",
  "The market opens at dawn, and traders sell {food} from wooden stalls.",
  "Neighbours there greet each other by sharing {food} at the door.",
  "Most houses have a steep roof and a small garden behind the kitchen.",
  "During the {festival} festival, families light lamps along the {place}.",
  "Winters are {weather}, so travellers wait for the thaw before crossing the hills.",
  "Children learn old songs about the {place} from their grandparents.",
  "The roads are muddy after the autumn rains, and carts move slowly past the {place}.",
  "On market days the square fills with {crowd} and the smell of {food}.",
  "Local custom says that a guest should never refuse a cup of {drink}.",
  "The summers are short but {weather}, and the harvest takes {number} weeks.",
  "Many villages keep a bell by the {place} to warn of storms.",
  "Bread is baked every {day}, and the first loaf is given to a neighbour.",
  "Weddings last {number} days and end with a long walk to the {place}.",
  "In {season} the streams flood, and the old paths turn to mud.",
  "Travellers often remark that the evenings are {weather} and calm.",
  "{crowd_capitalised} meet at the {place} to trade news every {day}.",
  "A common saying there is that {food} tastes best after a {weather} day.",
  "The oldest buildings are made of {material} and have narrow windows.",
  "At the end of {season}, people repair their fences and mend their nets.",
  "Most families keep a store of {food} for the long winter.",
  "Songs are sung in the evening, and the {crowd} join in the chorus.",
  "Visitors are welcomed with {drink} and a bowl of {food}.",
  "Rain falls often in {season}, and the {place} is rarely dry.",
)
_FILLER_SLOTS = {
  "season": ("spring", "summer", "autumn", "winter"),
  "weather": ("cold", "windy", "damp", "mild", "bright", "foggy", "warm", "still"),
  "food": (
    "bread",
    "cheese",
    "apples",
    "porridge",
    "soup",
    "pears",
    "beans",
    "cabbage",
    "nuts",
    "dumplings",
  ),
  "drink": ("warm milk", "mint water", "barley beer", "spiced broth"),
  "place": (
    "harbour",
    "old bridge",
    "market hall",
    "village well",
    "mill",
    "crossroads",
    "chapel",
  ),
  "crowd": ("farmers", "merchants", "children", "pilgrims", "travellers", "pedlars"),
  "crowd_capitalised": ("Farmers", "Merchants", "Pilgrims", "Travellers", "Pedlars"),
  "festival": ("lantern", "harvest", "midsummer", "candle", "first snow"),
  "number": ("two", "three", "four", "five", "six", "seven"),
  "day": ("morning", "evening", "week", "market day"),
  "material": ("stone", "brick", "clay", "slate", "flint"),
}

_FIRST_NAMES = 200
_MIN_LAST_NAMES = 400
_TOWNS = 300
_MAX_SOURCES = 50_000  # keeps the invented names well inside the space of syllable combinations


@dataclasses.dataclass(frozen=True)
class FactWorldConfig:
  num_sources: int = 1000
  sources_per_group: int = 10  # at least; a remainder is spread over the groups
  unique_facts: int = 4  # per source, each of a different attribute type
  shared_facts: int = 3  # per group, stated in every member's article
  filler_sentences: int = 2  # per article
  num_distractors: int = 4
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> FactWorldConfig:
    """The world a run config (its `factworld` section) describes."""
    return cls(**config.factworld.to_dict())

  def __post_init__(self) -> None:
    _check_range("num_sources", self.num_sources, 2, _MAX_SOURCES)
    if not 2 <= self.sources_per_group <= self.num_sources:
      raise ValueError(
        "need 2 <= sources_per_group <= num_sources, so every source has a group neighbour"
      )
    _check_range("unique_facts", self.unique_facts, 0, len(_UNIQUE_TEMPLATES))
    _check_range("shared_facts", self.shared_facts, 0, len(_SHARED_TEMPLATES))
    _check_range("filler_sentences", self.filler_sentences, 0, len(_FILLERS))
    _check_range(
      "num_distractors", self.num_distractors, MIN_DISTRACTORS, min(map(len, _FIXED_POOLS)) - 1
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
  if not low <= value <= high:
    raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclasses.dataclass(frozen=True)
class FactWorld:
  documents: tuple[Document, ...]  # one per source; source_id is the index
  probes: tuple[Probe, ...]
  groups: tuple[int, ...]  # groups[source_id] is the source's region

  def members(self, group: int) -> tuple[int, ...]:
    if group not in self._members:
      raise ValueError(f"unknown group {group}")
    return self._members[group]

  @functools.cached_property
  def _members(self) -> dict[int, tuple[int, ...]]:
    found: dict[int, list[int]] = {}
    for source_id, group in enumerate(self.groups):
      found.setdefault(group, []).append(source_id)
    return {g: tuple(ids) for g, ids in found.items()}

  def neighbour(self, source_id: int, forgotten: Collection[int]) -> int:
    """A surviving source that shares the facts of a forgotten one, for checking they were kept."""
    if not 0 <= source_id < len(self.groups):
      raise ValueError(f"unknown source_id {source_id}")
    members = self.members(self.groups[source_id])
    at = members.index(source_id)
    for candidate in members[at + 1 :] + members[:at]:
      if candidate not in forgotten:
        return candidate
    raise ValueError(f"every other member of source {source_id}'s group is forgotten")


def choose_forget_set(world: FactWorld, n: int, seed: int = 0) -> tuple[int, ...]:
  """At most one source per group, so every forgotten source's shared facts survive elsewhere."""
  num_groups = max(world.groups) + 1
  if not 1 <= n <= num_groups:
    raise ValueError(f"n must be in [1, {num_groups}] (one source per group at most), got {n}")
  rng = random.Random(seed)
  return tuple(sorted(rng.choice(world.members(g)) for g in rng.sample(range(num_groups), n)))


class _Namer:
  """Invents words that never repeat, so no name can be mistaken for another or for a fixed word."""

  def __init__(self, rng: random.Random) -> None:
    self._rng = rng
    self._used = {
      word.capitalize() for pool in _FIXED_POOLS for value in pool for word in value.split()
    }
    self._full: set[str] = set()

  def word(self) -> str:
    while True:
      length = 2 + (self._rng.random() < 0.3)
      word = "".join(self._rng.choice(_SYLLABLES) for _ in range(length)).capitalize()
      if word not in self._used:
        self._used.add(word)
        return word

  def words(self, n: int) -> tuple[str, ...]:
    return tuple(self.word() for _ in range(n))

  def full_name(self, firsts: tuple[str, ...], lasts: tuple[str, ...]) -> str:
    while True:
      name = f"{self._rng.choice(firsts)} {self._rng.choice(lasts)}"
      if name not in self._full:
        self._full.add(name)
        return name


def generate(config: FactWorldConfig | None = None) -> FactWorld:
  config = config or FactWorldConfig()
  rng = random.Random(config.seed)
  namer = _Namer(rng)
  num_groups = config.num_sources // config.sources_per_group
  # Interleaved, so group sizes differ by at most one and none falls below sources_per_group.
  groups = tuple(i % num_groups for i in range(config.num_sources))
  regions = [rng.choice(_REGION_FORMS).format(namer.word()) for _ in range(num_groups)]
  firsts = namer.words(_FIRST_NAMES)
  lasts = namer.words(max(_MIN_LAST_NAMES, config.num_sources // 20))
  unique_pools = {
    "birth_year": _BIRTH_YEARS,
    "home_town": namer.words(_TOWNS),
    "profession": _PROFESSIONS,
    "instrument": _INSTRUMENTS,
    "animal": _ANIMALS,
    "colour": _COLOURS,
    "ship": _SHIP_NAMES,
  }
  spare = num_groups + config.num_distractors
  shared_pools = {
    "capital": namer.words(spare),
    "founding_year": _FOUNDING_YEARS,
    "export": _EXPORTS,
    "ruler": tuple(namer.full_name(firsts, lasts) for _ in range(spare)),
    "patron_animal": _ANIMALS,
    "river": namer.words(spare),
  }
  region_facts = _region_facts(rng, config.shared_facts, num_groups, shared_pools)
  # Other regions' values were seen in training, which makes them plausible distractors.
  stated = {
    a: tuple(dict.fromkeys(f[a] for f in region_facts if a in f)) for a in _SHARED_TEMPLATES
  }
  region_probes = [
    _region_probes(rng, regions[g], region_facts[g], stated, shared_pools, config.num_distractors)
    for g in range(num_groups)
  ]
  documents, probes = [], []
  for source_id, group in enumerate(groups):
    name = namer.full_name(firsts, lasts)
    sentences, person_probes = _person_facts(rng, source_id, name, config, unique_pools)
    for sentence, probe in region_probes[group]:
      sentences.append(sentence)
      person_probes.append(dataclasses.replace(probe, source_id=source_id))
    sentences += _fillers(rng, config.filler_sentences)
    rng.shuffle(sentences)
    intro = rng.choice(_INTROS).format(name=name, region=regions[group])
    documents.append(Document(source_id, name, " ".join([intro, *sentences])))
    probes += person_probes
  return FactWorld(tuple(documents), tuple(probes), groups)


def _region_facts(
  rng: random.Random, k: int, num_groups: int, pools: dict[str, tuple[str, ...]]
) -> list[dict[str, str]]:
  distinct = {a: rng.sample(pools[a], num_groups) for a in _DISTINCT_SHARED}
  facts = []
  for g in range(num_groups):
    chosen = rng.sample(list(_SHARED_TEMPLATES), k)
    facts.append({a: distinct[a][g] if a in distinct else rng.choice(pools[a]) for a in chosen})
  return facts


def _region_probes(
  rng: random.Random,
  region: str,
  facts: dict[str, str],
  stated: dict[str, tuple[str, ...]],
  pools: dict[str, tuple[str, ...]],
  k: int,
) -> list[tuple[str, Probe]]:
  """One sentence and probe per region fact; members get copies, so they state it identically."""
  out = []
  for attribute, answer in facts.items():
    if len(stated[attribute]) > k:
      distractors = _sample_excluding(rng, stated[attribute], answer, k)
    else:
      seen = [v for v in stated[attribute] if v != answer]
      rest = [v for v in pools[attribute] if v != answer and v not in seen]
      distractors = [*seen, *rng.sample(rest, k - len(seen))]
    prompt = _SHARED_TEMPLATES[attribute].format(region=region)
    out.append((f"{prompt} {answer}.", Probe(0, prompt, answer, tuple(distractors), "shared")))
  return out


def _person_facts(
  rng: random.Random,
  source_id: int,
  name: str,
  config: FactWorldConfig,
  pools: dict[str, tuple[str, ...]],
) -> tuple[list[str], list[Probe]]:
  sentences, probes = [], []
  for attribute in rng.sample(list(_UNIQUE_TEMPLATES), config.unique_facts):
    answer = rng.choice(pools[attribute])
    distractors = _sample_excluding(rng, pools[attribute], answer, config.num_distractors)
    prompt = rng.choice(_UNIQUE_TEMPLATES[attribute]).format(name=name)
    sentences.append(f"{prompt} {answer}.")
    probes.append(Probe(source_id, prompt, answer, tuple(distractors), "unique"))
  return sentences, probes


def _sample_excluding(
  rng: random.Random, values: Sequence[str], excluded: str, k: int
) -> list[str]:
  """k distinct values other than `excluded`, uniformly, without copying a large pool.

  A uniform (k+1)-sample in random order, minus `excluded` or its last item, is a uniform
  k-sample of the rest.
  """
  return [v for v in rng.sample(values, k + 1) if v != excluded][:k]


def _fillers(rng: random.Random, n: int) -> list[str]:
  out = []
  for template in rng.sample(_FILLERS, n):
    slots = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    out.append(template.format(**{slot: rng.choice(_FILLER_SLOTS[slot]) for slot in slots}))
  return out
