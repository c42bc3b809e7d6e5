"""Commands as they are typed: a bad input is one line naming the field or file, loses nothing."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from nullearn.data import records

ROOT = pathlib.Path(__file__).parents[1]
# A run small enough to train in seconds through the real command.
SMALL = [
  "--config.model.d_model=32",
  "--config.model.num_layers=1",
  "--config.model.num_heads=2",
  "--config.model.num_kv_heads=1",
  "--config.model.head_dim=16",
  "--config.model.backbone=8",
  "--config.model.pool=64",
  "--config.model.active=4",
  "--config.model.vocab_size=512",
  "--config.data.seq_len=32",
  "--config.data.batch_size=4",
  "--config.factworld.num_sources=40",
  "--config.factworld.sources_per_group=4",
  "--config.train.steps=4",
  "--config.train.log_every=2",
  "--config.mesh.fsdp=1",
]


def nullearn(*args, check_ok: bool = False) -> subprocess.CompletedProcess:
  env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as a user's shell has
  env.pop("NULLEARN_TRACEBACK", None)
  out = subprocess.run(
    [sys.executable, "-m", "nullearn.cli", *map(str, args)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  if check_ok:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


def one_line_error(out: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
  """The command failed with exactly one line on stderr, naming every fragment."""
  assert out.returncode != 0, out.stdout[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith(f"nullearn {command}: error: "), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A trained run on the fact world, and its files as they were after training."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  nullearn("train", f"--workdir={workdir}", *SMALL, check_ok=True)
  return workdir


@pytest.mark.parametrize(
  "flag,fragment",
  [
    ("--config.train.checkpoint_every=0", "train.checkpoint_every: must be >= 1, got 0"),
    ("--config.train.steps=-5", "train.steps: must be >= 0, got -5"),
    ("--config.data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
  ],
)
def test_train_refuses_bad_settings_before_anything(tmp_path, flag, fragment):
  out = nullearn("train", f"--workdir={tmp_path / 'w'}", *SMALL, flag)
  one_line_error(out, "train", fragment)
  assert not (tmp_path / "w").exists()


def test_train_reports_bad_corpus_files_by_file_and_line(tmp_path):
  docs = tmp_path / "docs.jsonl"
  docs.write_text('{"source_id": 1, "source": "A", "text": "x"}\n{"source_id": 1, "source"\n')
  out = nullearn("train", f"--workdir={tmp_path / 'w'}", *SMALL, f"--config.data.corpus={docs}")
  one_line_error(out, "train", "docs.jsonl:2: invalid JSON")
  docs.write_text("")
  one_line_error(
    nullearn("train", f"--workdir={tmp_path / 'w'}", *SMALL, f"--config.data.corpus={docs}"),
    "train",
    "docs.jsonl: no documents",
  )
  one_line_error(
    nullearn(
      "train",
      f"--workdir={tmp_path / 'w'}",
      *SMALL,
      f"--config.data.corpus={tmp_path / 'missing.jsonl'}",
    ),
    "train",
    "missing.jsonl",
  )


def test_train_without_workdir(tmp_path):
  one_line_error(nullearn("train", *SMALL), "train", "--workdir is required")


def test_a_changed_resume_is_refused_and_nothing_is_overwritten(run, tmp_path):
  files = {name: (run / name).read_bytes() for name in ("config.json", "tokenizer.model")}
  line = one_line_error(
    nullearn("train", f"--workdir={run}", *SMALL, "--config.model.d_model=48"),
    "train",
    "model shape",
    "d_model",
  )
  assert "corrupt" not in line
  one_line_error(
    nullearn("train", f"--workdir={run}", *SMALL, "--config.data.exclude_sources=3,4"),
    "train",
    "training data",
    "excluded",
  )
  one_line_error(
    nullearn("train", f"--workdir={run}", *SMALL, "--config.train.lr=0.1"),
    "train",
    "training schedule",
    "lr",
  )
  one_line_error(
    nullearn("train", f"--workdir={run}", *SMALL, "--config.model.mask_seed=3"),
    "train",
    "mask_seed: 0 vs 3",
  )
  other = tmp_path / "other.model"
  from nullearn.data import factworld
  from nullearn.data.tokenizer import train_tokenizer

  world = factworld.generate(factworld.FactWorldConfig(num_sources=40, sources_per_group=4))
  train_tokenizer([d.text.upper() for d in world.documents], 512).save(other)
  one_line_error(
    nullearn("train", f"--workdir={run}", *SMALL, f"--tokenizer={other}"),
    "train",
    "--tokenizer",
    "is not the tokenizer of the run",
  )
  for name, content in files.items():
    assert (run / name).read_bytes() == content, f"{name} was overwritten"


def test_tokenizer_train_never_replaces_a_runs_tokenizer(run):
  one_line_error(
    nullearn("tokenizer", "train", f"--workdir={run}", *SMALL),
    "tokenizer",
    "tokenizer.model exists",
  )


def test_factworld_bad_setting(tmp_path):
  one_line_error(
    nullearn("factworld", f"--out={tmp_path}", "--config.factworld.num_sources=1"),
    "factworld",
    "num_sources must be in [2",
  )
  one_line_error(nullearn("factworld"), "factworld", "--out is required")


def test_eval_bad_inputs(run, tmp_path):
  one_line_error(nullearn("eval", f"--workdir={run}", "--forget=3"), "eval", "--out is required")
  one_line_error(
    nullearn("eval", f"--workdir={tmp_path}", "--forget=3", f"--out={tmp_path}"),
    "eval",
    "no checkpoint found",
  )
  one_line_error(
    nullearn("eval", f"--workdir={run}", "--forget=Nobody Atall", f"--out={tmp_path}"),
    "eval",
    "unknown source 'Nobody Atall'",
  )
  one_line_error(
    nullearn(
      "eval", f"--workdir={run}", "--forget=3", f"--oracle={run}", f"--out={tmp_path / 'r'}"
    ),
    "eval",
    "--oracle: was trained on forgotten sources [3]",
    "--force",
  )
  assert not (tmp_path / "r").exists()


def test_eval_force_compares_anyway_and_says_so(run, tmp_path):
  out = nullearn(
    "eval",
    f"--workdir={run}",
    "--forget=3",
    f"--oracle={run}",
    "--force",
    f"--out={tmp_path}",
    "--config.eval.sections=",
    "--config.eval.seq_len=32",
    check_ok=True,
  )
  assert "Checks overridden with --force" in out.stdout
  # 4 of 64 sinks per source: n sources leave (15/16)^n of the pool, 1% of it lost at n = 1
  # (6.2%), 10% at n = 2 (12.1%) and 50% at n = 11 (50.9%).
  assert (
    "4 active sinks of a pool of 64 (p = 0.0625): excluding 1 sources removes 6.2% of the pool"
  ) in out.stdout
  assert "before the pool loses 1%: 0, 10%: 1, 50%: 10." in out.stdout
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["forced"] and report["forced"][0].startswith("--oracle: was trained")


def test_unknown_command_and_help():
  out = nullearn("frobnicate")
  assert out.returncode == 2 and "commands:" in out.stderr
  assert nullearn("--help").returncode == 0


def test_probe_answers_that_tokenize_to_nothing_are_refused(run, tmp_path):
  docs, probes = tmp_path / "docs.jsonl", tmp_path / "probes.jsonl"
  from nullearn.data import factworld

  world = factworld.generate(factworld.FactWorldConfig(num_sources=40, sources_per_group=4))
  records.write_documents(docs, world.documents)
  probes.write_text(
    json.dumps(
      {
        "source_id": 3,
        "prompt": "The",
        "answer": "\u200b",
        "distractors": ["a", "b", "c"],
        "kind": "unique",
      }
    )
    + "\n"
  )
  out = nullearn(
    "eval",
    f"--workdir={run}",
    "--forget=3",
    f"--corpus={docs}",
    f"--probes={probes}",
    f"--out={tmp_path / 'r'}",
    "--config.eval.sections=",
  )
  one_line_error(out, "eval", "tokenizes to nothing")
