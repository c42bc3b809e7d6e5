"""The typed report: Truth Ratios in our orientation and TOFU's, and open-unlearning's layout."""

import numpy as np
import pytest

from nullearn import report, results
from nullearn.results import Cond, FactSet, Summary


def test_summary_reports_both_orientations():
  # Ours R = Pn(answer) / Pn(distractors); TOFU's R' = 1/R.
  s = Summary.of([0.5, 1.0, 2.0, 4.0, 8.0])
  assert (s.n, s.median, s.frac_above_1) == (5, 2.0, 0.6)
  assert s.tofu_median == 0.5  # median of [2, 1, 0.5, 0.25, 0.125]
  assert s.tofu_mean == pytest.approx(np.mean([2, 1, 0.5, 0.25, 0.125]))
  assert s.tofu_forget == pytest.approx(np.mean([0.5, 1, 0.5, 0.25, 0.125]))
  assert s.tofu_retain == pytest.approx(np.mean([0, 0, 0.5, 0.75, 0.875]))
  assert s.forget_quality is None
  empty = Summary.of([], oracle=[1.0])
  assert empty.n == 0 and np.isnan(empty.tofu_forget) and np.isnan(empty.forget_quality)


def _report():
  ratios = {Cond.SINK_ON: [4.0, 2.0, 8.0], Cond.ORACLE: [1.0, 0.5, 2.0]}
  kinds = ["unique", "unique", "shared"]
  return results.Report(
    forgotten=[{"id": 1, "name": "A", "routed_to": 2, "routed_name": "B"}],
    kinds=kinds,
    conditions=results.summarize({c: np.asarray(r) for c, r in ratios.items()}, kinds),
    ratios=ratios,
  )


def test_report_json_keys_probes_by_index_as_open_unlearning_does():
  out = _report().to_dict()["tofu"]
  on = out[Cond.SINK_ON]["forget_truth_ratio"]
  assert on["value_by_index"] == {"0": {"score": 0.25}, "1": {"score": 0.5}, "2": {"score": 0.125}}
  assert on["agg_value"] == pytest.approx(np.mean([0.25, 0.5, 0.125]))
  assert out[Cond.ORACLE]["forget_quality"]["agg_value"] == pytest.approx(1.0)
  assert out[Cond.SINK_ON]["forget_quality"]["agg_value"] == pytest.approx(
    _report().conditions[Cond.SINK_ON][FactSet.ALL].forget_quality
  )


def test_markdown_prints_tofus_orientation_beside_ours():
  md = report.markdown(_report())
  table = md[md.index("### In TOFU's orientation") :].split("\n\n")[2].splitlines()
  sink_on = next(line for line in table if line.startswith("| sink on |")).split(" | ")
  assert sink_on[1:3] == ["0.38", "0.38"]  # unique: median of [0.25, 0.5], mean min(R', 1/R')
