"""Zero-shot capability on ARC-Easy, Winogrande, PIQA and SciQ, scored as lm-eval scores it.

A choice's log-likelihood is the summed log-probability of its continuation tokens
after its context (lm-evaluation-harness: `lm_eval/api/model.py` `_encode_pair` splits
the tokens, `lm_eval/api/task.py` `process_results` scores): `acc` picks the choice with
the largest sum, `acc_norm` the largest sum divided by the choice string's length in
characters. Each row starts with BOS, as the project's training documents do; a row
longer than the model's trained context loses its oldest tokens after BOS, as lm-eval
cuts to its max length (and as `inference.option_rows` cuts probes).
Each task's formatting, and the lm-eval file it follows, is in `nullearn.data.mc_tasks`.
The NULL is scored with every sink off, under the expected mask and routed to a source;
the plain model of the same width for comparison.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx

from nullearn import batching, losses
from nullearn.data import mc_tasks
from nullearn.data.mc_tasks import Question
from nullearn.data.tokenizer import BOS_ID, Tokenizer
from nullearn.inference import Run, fixed_switch, load_run
from nullearn.switch import Switch

QuestionSwitchFn = Callable[[Sequence[Question]], Switch]  # one question per batch row
DEFAULT_BATCH_TOKENS = 8192

# The paper's 1B figures: (NULL, plain transformer of the same size).
PAPER = {
  "arc_easy": (0.428, 0.434),
  "winogrande": (0.530, 0.510),
  "piqa": (0.643, 0.645),
  "sciq": (0.639, 0.631),
  "average": (0.560, 0.555),
}


def encode_pair(
  tokenizer: Tokenizer, context: str, continuation: str
) -> tuple[list[int], list[int]]:
  """lm-eval's split: the context's trailing spaces join the continuation, whose tokens
  are what encoding the whole adds after the context's own tokens."""
  spaces = len(context) - len(context.rstrip())
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  whole = tokenizer.encode(context + continuation)
  context_ids = tokenizer.encode(context)
  return context_ids, whole[len(context_ids) :]


def choice_rows(
  tokenizer: Tokenizer, questions: Sequence[Question], max_len: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
  """Per choice: BOS + context + continuation in at most `max_len` + 1 tokens (the
  oldest after BOS dropped), how many of its last tokens are scored, its question."""
  rows, scored, owner = [], [], []
  for i, q in enumerate(questions):
    for context, continuation in zip(q.contexts, q.continuations):
      context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
      text = [*context_ids, *continuation_ids][-max_len:]
      rows.append(np.asarray([BOS_ID, *text], np.int32))
      scored.append(min(len(continuation_ids), len(text)))
      owner.append(i)
  return rows, np.asarray(scored, np.int32), np.asarray(owner, np.int64)


@functools.partial(jax.jit, static_argnums=(0,))
def _summed_loglik(graphdef, params, tokens_BxW, weights_BxW, switch: Switch):
  inputs_BxT, targets_BxT = tokens_BxW[:, :-1], tokens_BxW[:, 1:]
  segment_ids_BxT = (inputs_BxT > 0).astype(jnp.int32)
  positions_BxT = jnp.broadcast_to(jnp.arange(inputs_BxT.shape[1]), inputs_BxT.shape)
  logits_BxTxV = nnx.merge(graphdef, params)(inputs_BxT, segment_ids_BxT, positions_BxT, switch)
  return -losses.sequence_nll(logits_BxTxV, targets_BxT, weights_BxW[:, 1:])


def choice_loglikelihoods(
  run: Run,
  questions: Sequence[Question],
  switch_for: QuestionSwitchFn,
  *,
  batch_tokens: int = DEFAULT_BATCH_TOKENS,
  max_len: int | None = None,
  params=None,
) -> list[np.ndarray]:
  """Summed log-likelihood of every choice's continuation, one array per question.

  `switch_for(questions)` gets the question of each row of a batch (padding rows repeat
  one) and returns the batch's switch. Rows are batched by length, at most
  `batch_tokens` tokens a batch; `max_len` defaults to the model's trained context.
  """
  rows, scored, owner = choice_rows(
    run.tokenizer, questions, run.context if max_len is None else max_len
  )
  params = run.params if params is None else params
  plan = list(batching.token_batches([len(r) for r in rows], batch_tokens))
  results = []  # fetched at the end, so the device never waits for the host between batches
  for idx, _, width in plan:
    weights_BxW = np.zeros((len(idx), width), np.float32)
    for b, r in enumerate(idx):
      weights_BxW[b, len(rows[r]) - scored[r] : len(rows[r])] = 1.0
    tokens_BxW = batching.pad_rows([rows[r] for r in idx], width)
    switch = switch_for([questions[q] for q in owner[idx]])
    results.append(_summed_loglik(run.graphdef, params, tokens_BxW, weights_BxW, switch))
  out = np.zeros(len(rows), np.float64)
  for (idx, m, _), ll in zip(plan, jax.device_get(results)):
    out[idx[:m]] = ll[:m]
  return np.split(out, np.cumsum(np.bincount(owner, minlength=len(questions)))[:-1])


def choice_accuracy(
  loglikelihoods: Sequence[np.ndarray], questions: Sequence[Question]
) -> dict[str, np.ndarray]:
  """Per question, 1.0 if right: `acc` by summed log-likelihood, `acc_norm` by it divided
  by the choice's length in characters (lm-eval's `completion_len`)."""
  acc, acc_norm = [], []
  for ll, q in zip(loglikelihoods, questions):
    chars = np.asarray([float(len(c)) for c in q.choices])
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty choice, as lm-eval would
      acc_norm.append(float(np.argmax(ll / chars) == q.gold))
    acc.append(float(np.argmax(ll) == q.gold))
  return {"acc": np.asarray(acc), "acc_norm": np.asarray(acc_norm)}


def mean_stderr(values: np.ndarray) -> tuple[float, float]:
  """Mean and its standard error (sample deviation / sqrt(n)), as lm-eval reports it."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def score_questions(
  run: Run,
  questions: Sequence[Question],
  metrics: Sequence[str],
  switch_for: QuestionSwitchFn,
  *,
  batch_tokens: int = DEFAULT_BATCH_TOKENS,
  max_len: int | None = None,
) -> dict[str, float]:
  """{metric, metric_stderr for each of `metrics`, n}."""
  if not questions:
    raise ValueError("no questions to score")
  lls = choice_loglikelihoods(
    run, questions, switch_for, batch_tokens=batch_tokens, max_len=max_len
  )
  correct = choice_accuracy(lls, questions)
  out = {"n": len(questions)}
  for metric in metrics:
    out[metric], out[f"{metric}_stderr"] = mean_stderr(correct[metric])
  return out


def score_task(
  run: Run,
  task: str,
  switch_for: QuestionSwitchFn | None = None,
  *,
  data_dir=None,
  limit: int | None = None,
  batch_tokens: int = DEFAULT_BATCH_TOKENS,
  max_len: int | None = None,
) -> dict[str, float]:
  """One task's accuracy (lm-eval's metrics for it) under `switch_for` (default: backbone)."""
  questions = mc_tasks.load_questions(task, data_dir=data_dir, limit=limit)
  return score_questions(
    run,
    questions,
    mc_tasks.task(task).metrics,
    switch_for or fixed_switch(Switch.backbone()),
    batch_tokens=batch_tokens,
    max_len=max_len,
  )


Conditions = Mapping[str, tuple[Run, QuestionSwitchFn]]


def conditions(
  null: Run, *, plain: Run | None = None, route: QuestionSwitchFn | None = None
) -> dict[str, tuple[Run, QuestionSwitchFn]]:
  """The NULL with every sink off, under the expected mask and (given `route`) routed;
  the plain model (no sinks: its switch changes nothing)."""
  out = {
    "null (backbone only)": (null, fixed_switch(Switch.backbone())),
    "null (expected)": (null, fixed_switch(Switch.expected())),
  }
  if route is not None:
    out["null (routed)"] = (null, route)
  if plain is not None:
    out["plain"] = (plain, fixed_switch(Switch.backbone()))
  return out


def evaluate_capability(
  models: Conditions,
  tasks: Sequence[str] = tuple(mc_tasks.TASKS),
  *,
  data_dir=None,
  limit: int | None = None,
  batch_tokens: int = DEFAULT_BATCH_TOKENS,
  log: Callable[[str], None] = print,
) -> dict:
  """Every condition on every task, the average over tasks, and the paper's figures.

  Every task is read before any is scored, so a missing dataset stops it at once. The
  average's `acc_norm` takes `acc` for tasks without it (Winogrande), and its standard
  error treats the tasks as independent.
  """
  questions = {
    name: mc_tasks.load_questions(name, data_dir=data_dir, limit=limit) for name in tasks
  }
  report = {"tasks": {}, "average": {}, "paper": PAPER}
  for name in tasks:
    report["tasks"][name] = {}
    for condition, (run, switch_for) in models.items():
      log(f"{name}: {condition} ({len(questions[name])} questions)")
      report["tasks"][name][condition] = score_questions(
        run, questions[name], mc_tasks.task(name).metrics, switch_for, batch_tokens=batch_tokens
      )
  for condition in models:
    rows = [report["tasks"][t][condition] for t in tasks]
    report["average"][condition] = {}
    for metric in ("acc", "acc_norm"):
      picked = [r.get(metric, r["acc"]) for r in rows]
      errors = [r.get(f"{metric}_stderr", r["acc_stderr"]) for r in rows]
      report["average"][condition][metric] = float(np.mean(picked))
      report["average"][condition][f"{metric}_stderr"] = float(
        math.sqrt(sum(e * e for e in errors)) / len(rows)
      )
  return report


def format_table(report: dict) -> str:
  """Mean ± standard error per task, metric and condition, beside the paper's figures."""
  conds = list(report["average"])
  head = f"{'task':<11} {'metric':<9} {'n':>5}" + "".join(f" {c:>22}" for c in conds)
  lines = [head + f" {'paper NULL':>10} {'paper plain':>11}", "-" * (len(head) + 23)]
  entries = [
    (t, m, by, by[conds[0]]["n"])
    for t, by in report["tasks"].items()
    for m in mc_tasks.task(t).metrics
  ]
  entries += [("average", m, report["average"], "") for m in ("acc", "acc_norm")]
  for name, metric, by, n in entries:
    cells = "".join(f" {by[c][metric]:>14.3f} ± {by[c][metric + '_stderr']:.3f}" for c in conds)
    paper = report["paper"].get(name, ("", ""))
    lines.append(f"{name:<11} {metric:<9} {n:>5}{cells} {paper[0]:>10} {paper[1]:>11}")
  lines.append(
    "average acc_norm takes acc for winogrande (lm-eval reports only acc for it); "
    "the paper's figures do not say which metric they are"
  )
  return "\n".join(lines)


def capability_main(argv: Sequence[str]) -> None:
  """`nullearn capability [TASK ...] --workdir=NULL [--plain=DIR] --out=DIR` scores;
  `nullearn capability prepare TASK [MANUAL_DIR]` prepares a dataset in TFDS_DATA_DIR."""
  args = list(argv[1:])
  if args[:1] == ["prepare"]:
    if len(args) not in (2, 3):
      raise app.UsageError("usage: nullearn capability prepare TASK [MANUAL_DIR]")
    print(f"prepared {mc_tasks.prepare(args[1], manual_dir=args[2] if len(args) == 3 else None)}")
    return
  tasks = args or list(mc_tasks.TASKS)
  for name in tasks:  # before loading any model: an unknown task, a dataset not prepared
    mc_tasks.load_questions(name, limit=1)
  f = flags.FLAGS
  if not f.workdir or not f.out:
    raise app.UsageError("nullearn capability needs --workdir (the NULL) and --out")
  models = conditions(load_run(f.workdir), plain=load_run(f.plain) if f.plain else None)
  report = evaluate_capability(models, tasks)
  out = epath.Path(f.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "capability.json").write_text(json.dumps(report, indent=1))
  (out / "capability.md").write_text(format_table(report) + "\n")
  print(format_table(report))
