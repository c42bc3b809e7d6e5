"""Truth Ratio and its summaries.

Orientation: R = Pn(answer) / geomean_d Pn(distractor_d), with Pn the per-token
normalised probability exp(-mean token NLL). R > 1: the model prefers the truth;
R ~ 1: no preference (a model that never saw the fact). TOFU and open-unlearning
store the inverse, `tofu_ratio` = Pn(distractors) / Pn(answer) (< 1: prefers the
truth), and aggregate it by `tofu_forget_score` and `tofu_retain_score`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def truth_ratio(option_nll: np.ndarray) -> np.ndarray:
  """option_nll [probes, 1 + distractors] (mean NLL per token; answer first) -> R [probes]."""
  nll = np.asarray(option_nll, np.float64)
  return np.exp(np.nanmean(nll[:, 1:], axis=1) - nll[:, 0])


def summarize(ratios: np.ndarray) -> dict[str, float]:
  r = np.asarray(ratios, np.float64)
  if r.size == 0:
    return {"n": 0, "median": float("nan"), "mean": float("nan"), "frac_above_1": float("nan")}
  return {
    "n": int(r.size),
    "median": float(np.median(r)),
    "mean": float(np.mean(r)),
    "frac_above_1": float(np.mean(r > 1.0)),
  }


def tofu_ratio(ratios: np.ndarray) -> np.ndarray:
  """TOFU's per-probe Truth Ratio R' = Pn(distractors) / Pn(answer) = 1/R, from ours."""
  return 1.0 / np.asarray(ratios, np.float64)


def tofu_forget_score(ratios: np.ndarray) -> float:
  """TOFU's forget-set Truth Ratio mean(min(R', 1/R')); 1 = no preference."""
  r = tofu_ratio(ratios)
  return float(np.mean(np.minimum(r, 1.0 / r)))


def tofu_retain_score(ratios: np.ndarray) -> float:
  """TOFU's retain-set Truth Ratio mean(max(0, 1 - R')); higher = knows."""
  return float(np.mean(np.maximum(0.0, 1.0 - tofu_ratio(ratios))))


def value_by_index(values, key: str = "score") -> dict[str, dict[str, float]]:
  """Per-probe values keyed by probe index, as open-unlearning's reports store them."""
  return {str(i): {key: float(v)} for i, v in enumerate(values)}


def forget_quality(ratios: np.ndarray, oracle_ratios: np.ndarray) -> float:
  """Two-sample KS p-value: >= 0.05 reads "indistinguishable from retraining"."""
  r, o = np.asarray(ratios, np.float64), np.asarray(oracle_ratios, np.float64)
  if r.size == 0 or o.size == 0:
    return float("nan")
  return float(stats.ks_2samp(r, o).pvalue)
