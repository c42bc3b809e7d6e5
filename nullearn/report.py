"""An evaluation report on disk: report.json, report.md and PNG plots.

Plots are drawn on `matplotlib.figure.Figure` objects, never through pyplot's
global state, so writing a report leaves a notebook's inline plots alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from etils import epath
from matplotlib.figure import Figure

from nullearn.results import KINDS, FactSet, Relearning, Report


def write(report: Report, out_dir: str | epath.PathLike) -> list[epath.Path]:
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=_jsonable))
  (out / "report.md").write_text(markdown(report))
  written = [out / "report.json", out / "report.md"]
  written.append(plot_ratios(report.ratios, report.kinds, out / "truth_ratios.png"))
  if report.relearning:
    written.append(plot_relearning(report.relearning, out / "relearning.png"))
  return written


def _jsonable(o):
  if hasattr(o, "tolist"):
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _f(x, digits=2) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "–"
  return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(report: Report) -> str:
  lines = ["# Unlearning report", ""]
  if report.forced:
    lines += ["**Checks overridden with --force** (the comparison may not mean what it says):", ""]
    lines += [f"- {p}" for p in report.forced] + [""]
  lines += [
    "Forgotten sources: "
    + ", ".join(f"{f['name']} (→ {f['routed_name']})" for f in report.forgotten[:20])
    + (" …" if len(report.forgotten) > 20 else ""),
    "",
  ]
  counts = report.counts
  lines += ["Probes of forgotten sources: " + ", ".join(f"{k} {n}" for k, n in counts.items()), ""]
  cols = (*KINDS, FactSet.ARTICLE)
  lines += [
    "## Truth Ratio on the forgotten sources' probes",
    "",
    "Median and fraction > 1 per fact kind; FQ = Forget Quality (KS p-value against the "
    "oracle). *article* = unique and inferred together, every fact the source alone "
    "states: the unique/inferred split is drawn by the oracle's own ratios (its unique "
    "ratios are all <= 1), so FQ within the split also measures that cut.",
    "",
    "| condition | " + " | ".join(f"{k} median | {k} frac>1 | {k} FQ" for k in cols) + " |",
    "|---|" + "---|" * (3 * len(cols)),
  ]
  for name, row in report.conditions.items():
    cells = []
    for k in cols:
      cells += [_f(row[k].median), _f(row[k].frac_above_1), _f(row[k].forget_quality, 3)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("")
  lines += [
    "### In TOFU's orientation",
    "",
    "TOFU's Truth Ratio per probe is R' = 1/R (distractors over answer, < 1: prefers "
    "the truth); its forget-set Truth Ratio is mean(min(R', 1/R')), 1 when the model "
    "has no preference. report.json has R' per probe under `tofu` "
    "(open-unlearning's `value_by_index`).",
    "",
    "| condition | " + " | ".join(f"{k} median R' | {k} TOFU TR" for k in cols) + " |",
    "|---|" + "---|" * (2 * len(cols)),
  ]
  for name, row in report.conditions.items():
    cells = []
    for k in cols:
      cells += [_f(row[k].tofu_median), _f(row[k].tofu_forget)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("")
  if report.retained:
    r = report.retained
    lines += [
      "## Retained sources",
      "",
      f"Median Truth Ratio of {r['sink on'].n} retained probes: sink on "
      f"{_f(r['sink on'].median)}, after switching all forgotten sources off "
      f"{_f(r['after forgetting'].median)}. TOFU's retain-set Truth Ratio "
      f"(mean max(0, 1 - R'), higher: knows): {_f(r['sink on'].tofu_retain)} and "
      f"{_f(r['after forgetting'].tofu_retain)}.",
      "",
    ]
  if report.budget:
    b = report.budget
    lines += [
      "## Forgetting budget",
      "",
      f"{b['active']} active sinks of a pool of {b['pool']:,} (p = "
      f"{b['active'] / b['pool']:.4f}): excluding {b['forgotten']} sources removes "
      f"{b['pool_removed']:.1%} of the pool, and as much of every other source's sinks. "
      "Sources that can be forgotten before the pool loses "
      + ", ".join(f"{frac:.0%}: {n:,}" for frac, n in b["sources_for"].items())
      + ".",
      "",
    ]
  if report.capability:
    lines += ["## Capability: held-out loss per token", "", "| model | NLL/token |", "|---|---|"]
    lines += [f"| {k} | {_f(v, 3)} |" for k, v in report.capability.items() if k != "tokens"]
    lines.append("")
  if report.baselines:
    lines += [
      "## Post-hoc unlearning baselines",
      "",
      "| model+method | unique median | inferred median | shared median | all FQ | "
      "retained median |",
      "|---|---|---|---|---|---|",
    ]
    for name, row in report.baselines.items():
      retained = row.get("retained")
      lines.append(
        f"| {name} | {_f(row[FactSet.UNIQUE].median)} | "
        f"{_f(row[FactSet.INFERRED].median)} | {_f(row[FactSet.SHARED].median)} | "
        f"{_f(row[FactSet.ALL].forget_quality, 3)} | "
        f"{_f(retained.median if retained else None)} |"
      )
    lines.append("")
  if report.relearning:
    rel = report.relearning
    steps = next(iter(rel.curves.values()))["steps"]
    lines += [
      "## Relearning attack",
      "",
      f"Fine-tuned on half of the forgotten text; loss on the other half "
      f"({rel.test_tokens:.0f} tokens) and median Truth Ratio of its "
      f"{rel.num_test_probes} probes.",
      "",
      "| model | " + " | ".join(f"{s} steps" for s in steps) + " |",
      "|---|" + "---|" * len(steps),
    ]
    for name, c in rel.curves.items():
      lines.append(f"| {name} loss | " + " | ".join(_f(v, 3) for v in c["loss"]) + " |")
      lines.append(f"| {name} ratio | " + " | ".join(_f(v) for v in c["median_ratio"]) + " |")
    for name, v in rel.before_unlearning_median_ratio.items():
      lines.append(
        f"\nBefore post-hoc unlearning, {name} had a median ratio of {_f(v)} on these probes."
      )
    lines.append("")
  if report.extraction:
    lines += [
      "## Extraction",
      "",
      "Greedy continuations of the forgotten text's prefixes; ROUGE-L on the text "
      "(rouge-score, stemmed): F1 as MUSE's VerbMem, recall as TOFU's ROUGE.",
      "",
      "| model | exact match | ROUGE-L F1 | ROUGE-L recall | ACR (mean) | ACR found |",
      "|---|---|---|---|---|---|",
    ]
    for name, e in report.extraction.items():
      lines.append(
        f"| {name} | {_f(e['exact_match'])} | {_f(e['rouge_l'])} | "
        f"{_f(e.get('rouge_l_recall'))} | {_f(e['acr_mean'])} | "
        f"{sum(e['acr_found'])}/{len(e['acr_found'])} |"
      )
    lines.append("")
  lines += ["## Claims", ""]
  for c in report.claims:
    lines.append(f"- [{'holds' if c.holds else 'does not hold'}] {c.claim}: {_f(c.value, 3)}")
  return "\n".join(lines) + "\n"


def figures(report: Report) -> dict[str, Figure]:
  """The report's plots as figures (a notebook displays them), by file stem."""
  out = {"truth_ratios": ratios_figure(report.ratios, report.kinds)}
  if report.relearning:
    out["relearning"] = relearning_figure(report.relearning)
  return out


def plot_ratios(
  ratios: dict[str, Sequence[float]],
  kinds: Sequence[str],
  path: epath.PathLike,
  kind_order: Sequence[str] = KINDS,
) -> epath.Path:
  return _save(ratios_figure(ratios, kinds, kind_order), epath.Path(path))


def ratios_figure(
  ratios: dict[str, Sequence[float]], kinds: Sequence[str], kind_order: Sequence[str] = KINDS
) -> Figure:
  """Box plots of log Truth Ratio per condition, one panel per fact kind present."""
  kinds = np.asarray(kinds)
  present = [k for k in kind_order if np.any(kinds == k)]
  conds = list(ratios)
  fig = _figure(5 * len(present), 4.5)
  axes = fig.subplots(1, len(present), squeeze=False)[0]
  for ax, kind in zip(axes, present):
    data = [np.log(np.asarray(ratios[c])[kinds == kind]) for c in conds]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(conds) + 1), conds, rotation=30, ha="right")
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    ax.set_title(f"{kind} facts ({int(np.sum(kinds == kind))})")
  axes[0].set_ylabel("log Truth Ratio (> 0: prefers the answer)")
  fig.tight_layout()
  return fig


def plot_relearning(rel: Relearning, path: epath.PathLike) -> epath.Path:
  return _save(relearning_figure(rel), epath.Path(path))


def relearning_figure(rel: Relearning) -> Figure:
  """Loss and median Truth Ratio of the held-out half against fine-tuning steps."""
  fig = _figure(11, 4.2)
  a, b = fig.subplots(1, 2)
  for name, c in rel.curves.items():
    x = [max(s, 0.5) for s in c["steps"]]  # step 0 drawn at 0.5 on the log axis
    a.plot(x, c["loss"], marker="o", label=name)
    b.plot(x, c["median_ratio"], marker="o", label=name)
  for ax, title in ((a, "held-out half: NLL per token"), (b, "held-out facts: median Truth Ratio")):
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning steps on the other half (0 drawn at 0.5)")
    ax.set_title(title)
  b.axhline(1.0, color="gray", lw=0.8, ls="--")
  a.legend(fontsize=8)
  fig.tight_layout()
  return fig


def _figure(width: float, height: float) -> Figure:
  return Figure(figsize=(width, height))


def _save(fig: Figure, path: epath.Path) -> epath.Path:
  with path.open("wb") as f:
    fig.savefig(f, dpi=110, format="png")
  return path
