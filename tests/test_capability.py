"""Zero-shot capability: lm-eval's formatting and scoring, checked against a slow reference.

The task records reach the readers through `tfds.testing.mock_data` with the real
builders (ai2_arc, winogrande, piqa, and the project's own sciq) and their real
features: each hand-made record is serialized and deserialized by the builder's
features, as an ArrayRecord file would give it. SciQ is also prepared for real from
parquet files, and the command line reads that copy.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from conftest import small_config
from nullearn import capability, inference, train
from nullearn.data import mc_tasks
from nullearn.data.mc_tasks import Question
from nullearn.data.tokenizer import BOS_ID
from nullearn.switch import Switch

MAX_LEN = 32  # small_config's data.seq_len: the models' trained context
SPLITS = {"ai2_arc": "test", "winogrande": "validation", "piqa": "validation", "sciq": "test"}


def _records(world) -> dict[str, list[dict]]:
  """Hand-made records of each builder, in its feature format, from the fact world's text."""
  rng = np.random.default_rng(0)
  sentences = [s.strip() for d in world.documents[:40] for s in d.text.split(".") if s.strip()]
  words = sorted({w for s in sentences for w in s.split() if w.isalpha()})
  pick = lambda k: [str(w) for w in rng.choice(words, k, replace=False)]
  arc, wino, piqa, sciq = [], [], [], []
  for i in range(10):
    n = 3 + i % 3
    letters = "ABCDE"[:n]
    texts = pick(n)
    if i == 1:
      texts[0] = "été au Kanor"  # more bytes than characters
    arc.append(
      {
        "id": f"q{i}",
        "question": sentences[i] + "?",
        "answerKey": letters[i % n],
        "choices": {"text": texts, "label": list(letters)},
      }
    )
    tokens = sentences[20 + i].split()
    blank = 1 + i % (len(tokens) - 1)
    option1, option2 = pick(2)
    wino.append(
      {
        "sentence": " ".join(tokens[:blank] + ["_"] + tokens[blank + 1 :]),
        "option1": option1 + (" " if i == 3 else ""),  # trailing space joins the target
        "option2": option2,
        "label": "12"[i % 2],
      }
    )
    piqa.append(
      {
        "id": f"p{i}",
        "goal": sentences[40 + i],
        "sol1": sentences[50 + i],
        "sol2": sentences[60 + i],
        "label": i % 2,
      }
    )
    d1, d2, d3, correct = pick(4)
    support = ("  " if i % 2 else "") + ". ".join(sentences[70 + 3 * i : 73 + 3 * i]) * (1 + i % 2)
    sciq.append(
      {
        "question": sentences[100 + i] + "?",
        "distractor1": d1,
        "distractor2": d2,
        "distractor3": d3,
        "correct_answer": correct,
        "support": support,
      }
    )
  return {"ai2_arc": arc, "winogrande": wino, "piqa": piqa, "sciq": sciq}


@contextlib.contextmanager
def mocked(records):
  """Mocks the TFDS data sources; yields the (builder name, split) pairs read."""
  seen = []

  def as_data_source(builder, split, **kwargs):
    del kwargs
    seen.append((builder.name, split))
    features = builder.info.features
    return [
      features.deserialize_example_np(features.serialize_example(r)) for r in records[builder.name]
    ]

  with tfds.testing.mock_data(
    policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
  ):
    yield seen


@pytest.fixture(scope="module")
def records(world):
  return _records(world)


@pytest.fixture(scope="module")
def workdirs(world, tokenizer, tmp_path_factory):
  """A small NULL and a plain model of the same width, trained in seconds."""
  out = {}
  for name, model in (("null", {}), ("plain", dict(backbone=72, pool=0))):
    out[name] = tmp_path_factory.mktemp(name)
    train.train(small_config(**model), out[name], world.documents, tokenizer)
    tokenizer.save(out[name] / "tokenizer.model")
  return out


@pytest.fixture(scope="module")
def runs(workdirs):
  """The models restored as users load them."""
  out = {name: inference.load_run(path) for name, path in workdirs.items()}
  assert all(r.context == MAX_LEN for r in out.values())
  return out


# The slow reference: lm-eval's formatting and scoring written out again, one row at a time.


def _reference_pairs(name, r):
  """(context, continuation) per choice, lm-eval's choice strings, gold, routing query."""
  if name == "ai2_arc":
    context = f"Question: {r['question']}\nAnswer:"
    return (
      [(context, " " + t) for t in r["choices"]["text"]],
      r["choices"]["text"],
      r["choices"]["label"].index(r["answerKey"]),
      context,
    )
  if name == "piqa":
    context = f"Question: {r['goal']}\nAnswer:"
    choices = [r["sol1"], r["sol2"]]
    return [(context, " " + c) for c in choices], choices, r["label"], context
  if name == "sciq":
    context = r["support"].lstrip() + "\nQuestion: " + r["question"] + "\nAnswer:"
    choices = [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]]
    return [(context, " " + c) for c in choices], choices, 3, context
  cut = r["sentence"].index("_")
  choices = [r["sentence"][:cut] + r["option1"], r["sentence"][:cut] + r["option2"]]
  target = " " + r["sentence"][cut + 1 :].strip()
  return [(c, target) for c in choices], choices, int(r["label"]) - 1, r["sentence"]


def _reference_loglik(run, forward, context, continuation, switch):
  if context != context.rstrip():
    moved = context[len(context.rstrip()) :]
    context, continuation = context.rstrip(), moved + continuation
  whole = run.tokenizer.encode(context + continuation)
  context_ids = run.tokenizer.encode(context)
  continuation_ids = whole[len(context_ids) :]
  full = [BOS_ID] + context_ids + continuation_ids
  seq = [BOS_ID] + full[1:][-MAX_LEN:]  # too long: the oldest tokens after BOS go
  # One row, right-padded to one width (causal: the padding changes nothing before it).
  inputs = np.zeros((1, MAX_LEN), np.int32)
  inputs[0, : len(seq) - 1] = seq[:-1]
  logits = forward(run.params, inputs, (inputs > 0).astype(np.int32), switch)
  logp = np.asarray(jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1))
  k = min(len(continuation_ids), len(seq) - 1)
  total = sum(logp[len(seq) - 1 - k + j, seq[len(seq) - k + j]] for j in range(k))
  return total, len(full) > len(seq)


def reference(run, name, raw, switch_of_query):
  """Per-question log-likelihoods, acc and acc_norm, and whether a context was cut."""
  forward = jax.jit(
    lambda params, tokens, segments, switch: nnx.merge(run.graphdef, params)(
      tokens, segments, np.arange(MAX_LEN)[None], switch
    )
  )
  lls, acc, acc_norm, cut = [], [], [], False
  for r in raw:
    pairs, choices, gold, query = _reference_pairs(name, r)
    scored = [_reference_loglik(run, forward, c, t, switch_of_query(query)) for c, t in pairs]
    ll = np.asarray([s for s, _ in scored])
    cut |= any(c for _, c in scored)
    lls.append(ll)
    acc.append(int(np.argmax(ll)) == gold)
    acc_norm.append(int(np.argmax(ll / np.asarray([len(c) for c in choices]))) == gold)
  return lls, np.mean(acc), np.mean(acc_norm), cut


TASK_BUILDERS = [
  ("arc_easy", "ai2_arc"),
  ("winogrande", "winogrande"),
  ("piqa", "piqa"),
  ("sciq", "sciq"),
]


@pytest.mark.parametrize("task,builder", TASK_BUILDERS)
def test_scores_match_the_slow_reference(task, builder, runs, records):
  run = runs["null"]
  with mocked(records) as seen:
    questions = mc_tasks.load_questions(task)
    result = capability.score_task(
      run, task, inference.fixed_switch(Switch.expected()), batch_tokens=64
    )
  assert seen == [(builder, SPLITS[builder])] * 2, "the task's evaluation split, lm-eval's"
  expected = [_reference_pairs(builder, r) for r in records[builder]]
  assert [
    (list(zip(q.contexts, q.continuations)), list(q.choices), q.gold, q.query) for q in questions
  ] == [(pairs, list(choices), gold, query) for pairs, choices, gold, query in expected]
  lls = capability.choice_loglikelihoods(
    run, questions, inference.fixed_switch(Switch.expected()), batch_tokens=64
  )
  ref_lls, ref_acc, ref_norm, cut = reference(
    run, builder, records[builder], lambda query: Switch.expected()
  )
  assert [len(x) for x in lls] == [len(x) for x in ref_lls]
  np.testing.assert_allclose(np.concatenate(lls), np.concatenate(ref_lls), rtol=1e-4, atol=1e-4)
  assert result["n"] == len(records[builder])
  assert result["acc"] == pytest.approx(ref_acc, abs=1e-12)
  if "acc_norm" in mc_tasks.task(task).metrics:
    assert result["acc_norm"] == pytest.approx(ref_norm, abs=1e-12)
  else:
    assert "acc_norm" not in result
  if task == "sciq":
    assert cut, "some SciQ context is longer than the trained context and cut from the left"


def _source_of(query: str) -> int:
  return sum(query.encode()) % 40


def test_routed_switch_gets_each_rows_question(runs, records):
  run = runs["null"]
  asked = []

  def route(questions):
    asked.extend(q.query for q in questions)
    return Switch.sources(np.asarray([[_source_of(q.query)] for q in questions]))

  with mocked(records):
    questions = mc_tasks.load_questions("piqa")
  routed = capability.choice_loglikelihoods(run, questions, route, batch_tokens=64)
  ref_lls, *_ = reference(
    run, "piqa", records["piqa"], lambda query: Switch.sources([[_source_of(query)]])
  )
  np.testing.assert_allclose(np.concatenate(routed), np.concatenate(ref_lls), rtol=1e-4, atol=1e-4)
  assert set(asked) == {q.query for q in questions}
  backbone = capability.choice_loglikelihoods(
    run, questions, inference.fixed_switch(Switch.backbone())
  )
  assert np.abs(np.concatenate(routed) - np.concatenate(backbone)).max() > 1e-3


def test_acc_norm_divides_by_characters_as_lm_eval():
  """lm-eval: pred_norm = argmax(lls / len(choice)), the choice string without the delimiter."""
  choices = ("a", "bbbb", "été")  # "été" is 3 characters but 5 bytes
  lls = [np.array([-2.0, -4.0, -3.3])] * 3
  # acc: -2.0 wins. acc_norm: -2/1, -4/4 = -1, -3.3/3 = -1.1 -> "bbbb" (by bytes "été" would win)
  questions = [
    Question(("Q:",) * 3, tuple(" " + c for c in choices), choices, gold, "Q:")
    for gold in (0, 1, 2)
  ]
  got = capability.choice_accuracy(lls, questions)
  np.testing.assert_array_equal(got["acc"], [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(got["acc_norm"], [0.0, 1.0, 0.0])
  mean, stderr = capability.mean_stderr(np.array([1.0, 0.0, 1.0, 1.0]))
  assert (mean, stderr) == (0.75, pytest.approx(0.25))  # sample sd 0.5 / sqrt(4)


class _Characters:
  """One token per character: unlike the project's SentencePiece models (which drop
  surrounding whitespace), it shows where a space goes."""

  def encode(self, text):
    return [ord(c) for c in text]


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tokenizer):
  context, continuation = capability.encode_pair(_Characters(), "Tom gave Ann ", " a book")
  assert context == [ord(c) for c in "Tom gave Ann"]
  assert continuation == [ord(c) for c in "  a book"]
  context, continuation = capability.encode_pair(tokenizer, "The capital is", " Tarn")
  assert context + continuation == tokenizer.encode("The capital is Tarn")
  assert context == tokenizer.encode("The capital is")


def test_evaluate_reports_every_condition_and_the_paper(runs, records):
  route = lambda qs: Switch.sources(np.asarray([[_source_of(q.query)] for q in qs]))
  models = capability.conditions(runs["null"], plain=runs["plain"], route=route)
  with mocked(records):
    report = capability.evaluate_capability(models, batch_tokens=256, log=lambda m: None)
    plain_sciq = capability.score_task(runs["plain"], "sciq", batch_tokens=256)
  conditions = ["null (backbone only)", "null (expected)", "null (routed)", "plain"]
  assert list(report["average"]) == conditions
  assert report["tasks"]["sciq"]["plain"] == plain_sciq
  for condition in conditions:
    rows = [report["tasks"][t][condition] for t in mc_tasks.TASKS]
    assert report["average"][condition]["acc"] == pytest.approx(np.mean([r["acc"] for r in rows]))
    norm = [r.get("acc_norm", r["acc"]) for r in rows]
    assert report["average"][condition]["acc_norm"] == pytest.approx(np.mean(norm))
  table = capability.format_table(report)
  assert "0.428" in table and "0.555" in table and all(c in table for c in conditions)
  json.dumps(report)


@pytest.mark.parametrize("task", list(mc_tasks.TASKS))
def test_unprepared_dataset_is_a_one_line_error(task, tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    mc_tasks.load_questions(task, data_dir=tmp_path)
  message = str(e.value)
  assert "\n" not in message and str(tmp_path) in message
  assert mc_tasks.task(task).tfds_name in message
  assert f"nullearn capability prepare {task}" in message


def test_bad_record_names_the_record(records):
  broken = {
    **records,
    "winogrande": [
      records["winogrande"][0],
      {**records["winogrande"][1], "sentence": "No blank here"},
    ],
  }
  with mocked(broken), pytest.raises(ValueError, match=r"winogrande validation record 1: .*blank"):
    mc_tasks.load_questions("winogrande")
  with pytest.raises(ValueError, match="unknown task 'arc_challenge'"):
    mc_tasks.load_questions("arc_challenge")


def _write_sciq_parquet(directory, records):
  """The Hub layout: data/<split>-00000-of-00001.parquet, the Hub's column order."""
  columns = ["question", "distractor3", "distractor1", "distractor2", "correct_answer", "support"]
  (directory / "data").mkdir(parents=True)
  for split, rows in (("train", records[:2]), ("validation", records[2:4]), ("test", records)):
    table = pa.table({c: [r[c] for r in rows] for c in columns})
    pq.write_table(table, directory / "data" / f"{split}-00000-of-00001.parquet")


@pytest.fixture(scope="module")
def sciq_prepared(records, tmp_path_factory):
  parquet = tmp_path_factory.mktemp("sciq_parquet")
  _write_sciq_parquet(parquet, records["sciq"])
  data_dir = tmp_path_factory.mktemp("tfds")
  mc_tasks.prepare("sciq", data_dir=data_dir, manual_dir=parquet)
  return data_dir, parquet


def test_sciq_is_prepared_from_parquet_in_order(sciq_prepared, records):
  data_dir, _ = sciq_prepared
  questions = mc_tasks.load_questions("sciq", data_dir=data_dir)
  expected = [_reference_pairs("sciq", r) for r in records["sciq"]]
  assert [(q.contexts[0] + q.continuations[-1], q.choices) for q in questions] == [
    (pairs[3][0] + pairs[3][1], tuple(choices)) for pairs, choices, _, _ in expected
  ]
  assert len(mc_tasks.load_questions("sciq", data_dir=data_dir, limit=3)) == 3
  script = textwrap.dedent(f"""
      import sys
      from nullearn.data import mc_tasks
      assert len(mc_tasks.load_questions("sciq", data_dir={str(data_dir)!r})) == 10
      loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
      assert not loaded, loaded
      """)
  run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]


def test_prepare_needs_the_files_it_is_told_about(tmp_path):
  with pytest.raises(FileNotFoundError, match="allenai/sciq"):
    mc_tasks.prepare("sciq", data_dir=tmp_path / "tfds", manual_dir=tmp_path)
  fake = tmp_path / "physicaliqa-train-dev.zip"  # TFDS's file name for PIQA's archive
  fake.write_bytes(b"not the archive")
  with pytest.raises(Exception, match="wrong checksum"):  # found in manual_dir, then checked
    mc_tasks.prepare("piqa", data_dir=tmp_path / "tfds", manual_dir=tmp_path)


def test_command_prepares_and_scores(workdirs, records, tmp_path):
  parquet = tmp_path / "parquet"
  _write_sciq_parquet(parquet, records["sciq"])
  env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
  command = [sys.executable, "-m", "nullearn.cli", "capability"]
  missing = subprocess.run(
    command + ["sciq", "--workdir=x", "--out=y"],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert missing.returncode != 0 and "nullearn capability prepare sciq" in missing.stderr
  prepared = subprocess.run(
    command + ["prepare", "sciq", str(parquet)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert prepared.returncode == 0, prepared.stderr[-2000:]
  scored = subprocess.run(
    command
    + [
      "sciq",
      f"--workdir={workdirs['null']}",
      f"--plain={workdirs['plain']}",
      f"--out={tmp_path / 'rep'}",
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert scored.returncode == 0, scored.stderr[-2000:]
  report = json.loads((tmp_path / "rep" / "capability.json").read_text())
  assert report["tasks"]["sciq"]["null (backbone only)"]["n"] == 10
  assert set(report["average"]) == {"null (backbone only)", "null (expected)", "plain"}
  assert "sciq" in scored.stdout and "0.639" in scored.stdout
