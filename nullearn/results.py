"""The typed evaluation report, and the claims read from it by `nullearn eval` and the demo.

Conditions and fact sets are enums (string-valued, so they are also the JSON
keys), every summary is a `Summary`, and every pass/fail threshold comes from
`config.eval.claims`: one place states what "unlearned" means.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import ml_collections
import numpy as np

from nullearn import scores


class Cond(enum.StrEnum):
  """A model and a way of switching it, scored on the same probes as the others."""

  SINK_ON = "sink on"  # the NULL with each probe's own source's sinks
  SWITCHED_OFF = "switched off"  # routed to the nearest surviving source, own sinks excluded
  PROMPT_ROUTED = "prompt routed"  # the probe's prompt routed, as a deployment does
  ALL_OFF = "all forgotten off"  # routed, every forgotten source's sinks excluded at once
  BACKBONE = "backbone only"  # every sink off
  EXPECTED = "expected"  # every sink at active/pool, the forgotten ones off
  ORACLE = "oracle"  # retrained without the forgotten sources, routed as SWITCHED_OFF
  PLAIN = "plain"  # a plain transformer of the same width on the same data


class FactSet(enum.StrEnum):
  """Probe kinds, and the unions a claim is made on."""

  UNIQUE = "unique"  # the oracle cannot tell them (ratio <= 1)
  INFERRED = "inferred"  # the source's own facts that the oracle still tells
  SHARED = "shared"  # stated by several sources
  ARTICLE = "article"  # unique and inferred: every fact the source alone states
  ALL = "all"


KINDS = (FactSet.UNIQUE, FactSet.INFERRED, FactSet.SHARED)


def fact_sets(kinds: list[str]) -> dict[FactSet, np.ndarray]:
  """Boolean selections of the probes in every fact set, from per-probe kinds."""
  kinds_N = np.asarray(kinds)
  sets = {k: kinds_N == k for k in KINDS}
  sets[FactSet.ARTICLE] = kinds_N != FactSet.SHARED
  sets[FactSet.ALL] = np.ones(len(kinds_N), bool)
  return sets


@dataclasses.dataclass(frozen=True)
class Summary:
  """Truth Ratios of a set of probes under one condition, ours and in TOFU's orientation.

  Ours: R = Pn(answer) / Pn(distractors), > 1 prefers the truth. TOFU's:
  R' = 1/R, < 1 prefers the truth, aggregated over a forget set as
  mean(min(R', 1/R')) (1: no preference) and over a retain set as
  mean(max(0, 1 - R')) (higher: knows).
  """

  n: int
  median: float
  mean: float
  frac_above_1: float
  tofu_median: float  # median of R'
  tofu_mean: float  # mean of R' (not 1 / mean of R)
  tofu_forget: float  # TOFU's forget-set Truth Ratio
  tofu_retain: float  # TOFU's retain-set Truth Ratio
  forget_quality: float | None = None  # KS p-value against the oracle, when there is one

  @classmethod
  def of(cls, ratios, oracle=None) -> Summary:
    r = np.asarray(ratios, np.float64)
    if r.size == 0:
      nan = float("nan")
      return cls(0, nan, nan, nan, nan, nan, nan, nan, None if oracle is None else nan)
    fq = None if oracle is None else scores.forget_quality(r, oracle)
    tofu = scores.tofu_ratio(r)
    return cls(
      int(r.size),
      float(np.median(r)),
      float(np.mean(r)),
      float(np.mean(r > 1.0)),
      float(np.median(tofu)),
      float(np.mean(tofu)),
      scores.tofu_forget_score(r),
      scores.tofu_retain_score(r),
      fq,
    )


def summarize(ratios: dict[str, np.ndarray], kinds: list[str]) -> dict[str, dict[str, Summary]]:
  """Per condition and fact set; Forget Quality against the oracle's ratios when present.

  The unique/inferred split is drawn by the oracle's own ratios, so within it the
  oracle's distribution is cut at 1 and a Forget Quality there measures the cut
  as much as the model; `article` is the uncut set.
  """
  oracle = ratios.get(Cond.ORACLE)
  sets = fact_sets(kinds)
  return {
    name: {
      k: Summary.of(r[sel], None if oracle is None else oracle[sel]) for k, sel in sets.items()
    }
    for name, r in ratios.items()
  }


@dataclasses.dataclass(frozen=True)
class Claim:
  claim: str
  value: float
  threshold: float
  holds: bool


@dataclasses.dataclass
class Relearning:
  """Loss on the held-out half and median ratio of its probes after k fine-tuning steps."""

  curves: dict[str, dict[str, list[float]]]  # name -> steps, loss, median_ratio
  before_unlearning_median_ratio: dict[str, float]
  num_test_probes: int
  test_tokens: float


@dataclasses.dataclass
class Report:
  """Everything `nullearn eval` measured; `to_dict` is report.json."""

  forgotten: list[dict[str, Any]]  # id, name, routed_to, routed_name
  kinds: list[str]  # per forgotten probe, in probe order
  conditions: dict[str, dict[str, Summary]]
  ratios: dict[str, list[float]]  # per condition, per forgotten probe (index = probe index)
  probes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # source, prompt, answer
  retained: dict[str, Summary] = dataclasses.field(default_factory=dict)
  capability: dict[str, float] = dataclasses.field(default_factory=dict)
  baselines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  relearning: Relearning | None = None
  extraction: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  claims: list[Claim] = dataclasses.field(default_factory=list)
  forced: list[str] = dataclasses.field(default_factory=list)  # checks overridden by --force
  budget: dict[str, Any] = dataclasses.field(default_factory=dict)
  benchmark: dict[str, Any] = dataclasses.field(default_factory=dict)  # a benchmark's own notes
  seconds: float = 0.0

  @property
  def counts(self) -> dict[str, int]:
    return {k.value: self.kinds.count(k) for k in KINDS}

  def tofu(self) -> dict[str, dict[str, Any]]:
    """Per condition, the forgotten probes' Truth Ratios as open-unlearning reports them:
    TOFU's ratio per probe keyed by its index in `probes`, the forget-set aggregate, and
    the Forget Quality on all of them when there is an oracle."""
    out = {}
    for name, ratios in self.ratios.items():
      out[name] = {
        "forget_truth_ratio": {
          "agg_value": scores.tofu_forget_score(ratios),
          "value_by_index": scores.value_by_index(scores.tofu_ratio(ratios)),
        }
      }
      fq = self.conditions[name][FactSet.ALL].forget_quality
      if fq is not None:
        out[name]["forget_quality"] = {"agg_value": fq}
    return out

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["counts"] = self.counts
    out["tofu"] = self.tofu()
    return out


def claims(
  conditions: dict[str, dict[str, Summary]],
  thresholds: ml_collections.ConfigDict,
  relearning: Relearning | None = None,
) -> list[Claim]:
  """The suite's questions, answered from the measurements either way.

  Each needs the conditions it compares; a claim whose inputs are missing is
  not made. Article-specific facts are the source's own (unique and inferred).
  """
  t = thresholds
  out: list[Claim] = []

  def make(text, value, threshold, holds):
    if value is not None and math.isfinite(value):
      out.append(Claim(text, float(value), float(threshold), bool(holds)))

  on, off, oracle = (conditions.get(c) for c in (Cond.SINK_ON, Cond.SWITCHED_OFF, Cond.ORACLE))
  art = FactSet.ARTICLE
  if on:
    v = on[art].median
    make(
      f"sink on: article-specific facts known (median Truth Ratio >= {t.sink_on_median})",
      v,
      t.sink_on_median,
      v >= t.sink_on_median,
    )
  if on and oracle:
    v = on[art].frac_above_1 - oracle[art].frac_above_1
    make(
      f"sink on: fraction > 1 of article-specific facts at least {t.sink_on_frac_margin} "
      "above the oracle's",
      v,
      t.sink_on_frac_margin,
      v >= t.sink_on_frac_margin,
    )
  if off and oracle:
    v = abs(off[art].median - oracle[art].median)
    make(
      f"switched off: article-specific median within {t.off_median_gap} of the oracle's",
      v,
      t.off_median_gap,
      v <= t.off_median_gap,
    )
    v = abs(off[art].frac_above_1 - oracle[art].frac_above_1)
    make(
      f"switched off: article-specific fraction > 1 within {t.off_frac_gap} of the oracle's",
      v,
      t.off_frac_gap,
      v <= t.off_frac_gap,
    )
    for kind, what in (
      (art, "article-specific facts (unique and inferred)"),
      (FactSet.UNIQUE, "unique facts (oracle ratio <= 1, a cut distribution)"),
      (FactSet.SHARED, "shared facts"),
    ):
      v = off[kind].forget_quality
      make(
        f"switched off: {what} match the oracle under the same routing (Forget Quality "
        f"p >= {t.forget_quality})",
        v,
        t.forget_quality,
        v is not None and v >= t.forget_quality,
      )
  if on and off:
    keep = off[FactSet.SHARED].median / on[FactSet.SHARED].median
    make(
      f"switched off: shared facts keep >= {t.shared_keep:.0%} of their sink-on median",
      keep,
      t.shared_keep,
      keep >= t.shared_keep,
    )
  if relearning is not None:
    _relearning_claims(relearning, t, make)
  return out


def _relearning_claims(rel: Relearning, t, make) -> None:
  curves = rel.curves
  if Cond.ORACLE in curves and Cond.SWITCHED_OFF in curves:
    o = np.asarray(curves[Cond.ORACLE]["loss"])
    n = np.asarray(curves[Cond.SWITCHED_OFF]["loss"])
    gap = float(np.max(np.abs(n - o) / o))
    make(
      f"relearning: switched-off NULL within {t.relearn_gap:.0%} of the oracle's loss at "
      "every step count",
      gap,
      t.relearn_gap,
      gap <= t.relearn_gap,
    )
  for name, curve in curves.items():
    if not name.endswith("+npo"):
      continue
    before = rel.before_unlearning_median_ratio[name.split("+")[0]]
    within = [
      r for s, r in zip(curve["steps"], curve["median_ratio"]) if 0 < s <= t.npo_recovery_steps
    ]
    best = max(within) if within else float("nan")
    make(
      f"relearning: {name} forgotten facts back above {t.npo_recovery:.0%} of their "
      f"pre-unlearning ratio within {t.npo_recovery_steps} steps",
      best / before,
      t.npo_recovery,
      best >= t.npo_recovery * before,
    )
