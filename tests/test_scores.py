import math

import numpy as np
import pytest

from nullearn import scores


def test_truth_ratio_by_hand():
  # answer NLL 0.5 per token; distractors 1, 2, 3: geometric mean of their probabilities
  # is exp(-(1 + 2 + 3) / 3) = exp(-2), so R = exp(-0.5) / exp(-2) = exp(1.5).
  nll = np.array([[0.5, 1.0, 2.0, 3.0], [2.0, 1.0, 1.0, 1.0]])
  np.testing.assert_allclose(scores.truth_ratio(nll), [math.exp(1.5), math.exp(-1.0)])


def test_ragged_distractors_ignore_missing():
  nll = np.array([[0.5, 1.0, 2.0, np.nan]])
  np.testing.assert_allclose(scores.truth_ratio(nll), [math.exp(1.0)])


def test_summary_and_tofu_scores():
  r = np.array([0.5, 1.0, 2.0, 4.0])
  s = scores.summarize(r)
  assert s == {"n": 4, "median": 1.5, "mean": 1.875, "frac_above_1": 0.5}
  # TOFU stores R' = 1/R: forget score mean(min(R', 1/R')), retain score mean(max(0, 1 - R')).
  assert scores.tofu_forget_score(r) == pytest.approx(np.mean([0.5, 1.0, 0.5, 0.25]))
  assert scores.tofu_retain_score(r) == pytest.approx(np.mean([0.0, 0.0, 0.5, 0.75]))
  np.testing.assert_allclose(scores.tofu_ratio(r), [2.0, 1.0, 0.5, 0.25])
  assert scores.value_by_index(scores.tofu_ratio(r)) == {
    "0": {"score": 2.0},
    "1": {"score": 1.0},
    "2": {"score": 0.5},
    "3": {"score": 0.25},
  }
  assert np.isnan(scores.summarize(np.array([]))["median"])


def test_forget_quality_is_the_ks_p_value_by_hand():
  # Fully separated samples of 3 and 3: D = 1 and the exact two-sided p-value is
  # 2 / C(6, 3) = 0.1 (only the two orderings with all of one sample first).
  assert scores.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
  assert scores.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
  rng = np.random.default_rng(0)
  assert scores.forget_quality(rng.normal(size=500), rng.normal(3, size=500)) < 1e-10
