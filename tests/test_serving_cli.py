"""The serving commands as typed: router, generate, forget, export, attribute, and their errors."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import small_config
from nullearn import inference, ledger, train


def nullearn(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
  out = subprocess.run(
    [sys.executable, "-m", "nullearn.cli", *args], capture_output=True, text=True, timeout=300
  )
  if ok:
    assert out.returncode == 0, out.stderr[-2000:]
  return out


def refused(out: subprocess.CompletedProcess, command: str, message: str) -> None:
  """A bad request: exit 2 and one line, `nullearn <command>: error: <field>: <reason>`."""
  assert out.returncode == 2, (out.stdout, out.stderr)
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith(f"nullearn {command}: error: "), out.stderr
  assert message in lines[-1], lines[-1]
  assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def run_dir(world, tokenizer, tmp_path_factory):
  root = tmp_path_factory.mktemp("cli") / "run"
  c = small_config()
  c.train.steps = 20
  train.train(c, root, world.documents, tokenizer)
  tokenizer.save(root / "tokenizer.model")
  assert "indexed 40 sources" in nullearn("router", f"--workdir={root}").stdout
  return root


def test_generate_with_a_source_or_a_route(run_dir, world):
  w = f"--workdir={run_dir}"
  name = world.documents[5].source
  by_id = nullearn("generate", w, "--prompt=The capital of", "--source=5", "--max_new_tokens=4")
  assert by_id.stdout.strip()
  routed = nullearn("generate", w, f"--prompt={name} plays the", "--route", "--max_new_tokens=4")
  assert "routed to source 5 " in routed.stderr  # its own name finds it
  sampled = [
    nullearn(
      "generate",
      w,
      "--prompt=The capital of",
      "--source=5",
      "--temperature=1.5",
      "--top_k=40",
      "--top_p=0.95",
      f"--seed={seed}",
      "--max_new_tokens=12",
    ).stdout
    for seed in (3, 3, 4)
  ]
  assert sampled[0] == sampled[1] != sampled[2]  # a seed gives the same text every time


def test_bad_requests_are_one_line_errors(run_dir):
  w = f"--workdir={run_dir}"
  refused(
    nullearn("generate", w, "--prompt= ", "--source=5", ok=False), "generate", "--prompt: is empty"
  )
  refused(
    nullearn("generate", w, "--prompt=Hi", "--source=1", "--route", ok=False),
    "generate",
    "--source and --route",
  )
  refused(
    nullearn("generate", w, "--prompt=Hi", "--top_p=0", ok=False),
    "generate",
    "--top_p: must be in (0, 1], got 0.0",
  )
  refused(
    nullearn("generate", w, "--prompt=" + "the old bridge " * 40, ok=False),
    "generate",
    "exceed the model's context of 32 tokens",
  )
  refused(
    nullearn("generate", w, "--prompt=Hi", "--source=Nobody Atall", ok=False),
    "generate",
    "--source: unknown source 'Nobody Atall'",
  )
  refused(
    nullearn("generate", w, "--prompt=Hi", "--source=4000", ok=False),
    "generate",
    "--source: source id 4000 is not in the corpus",
  )
  refused(nullearn("forget", w, "--sources=1", ok=False), "forget", "--reason")
  refused(
    nullearn("attribute", w, "--prompt=Hi", "--continuation= ", ok=False),
    "attribute",
    "--continuation: is empty",
  )
  refused(nullearn("export", w, f"--out={run_dir}", ok=False), "export", "is not empty")


def test_forget_then_every_command_leaves_the_source_out(run_dir, world, tmp_path):
  run = shutil.copytree(run_dir, tmp_path / "run")
  w = f"--workdir={run}"
  name = world.documents[5].source
  out = nullearn("forget", w, f"--sources=7,{name}", "--reason=takedown 42")
  assert f"forgot source 5 ({name!r}): takedown 42" in out.stdout
  listed = nullearn("forget", w, "--list").stdout
  assert "takedown 42" in listed and name in listed and len(listed.splitlines()) == 3
  refused(
    nullearn("forget", w, "--sources=2,5", "--reason=again", ok=False),
    "forget",
    f"--sources: source 5 ('{name}') was forgotten on",
  )
  assert ledger.read(run).ids.tolist() == [5, 7]  # nothing of the refused call appended
  refused(
    nullearn("generate", w, "--prompt=Hi", "--source=5", ok=False),
    "generate",
    f"--source: source 5 ('{name}') was forgotten on",
  )
  routed = nullearn("generate", w, f"--prompt={name} plays the", "--route", "--max_new_tokens=2")
  assert "routed to source" in routed.stderr and "routed to source 5 " not in routed.stderr
  refused(
    nullearn("attribute", w, "--prompt=Hi", "--continuation=there", "--candidates=2,5", ok=False),
    "attribute",
    "--candidates: source 5",
  )
  ranked = nullearn("attribute", w, f"--prompt={name} plays the", "--continuation=lute").stdout
  rows = ranked.splitlines()[1:]
  assert len(rows) == 16 and not any(r.split()[1] in ("5", "7") for r in rows)

  exported = nullearn("export", w, f"--out={tmp_path / 'export'}").stdout
  assert "without the sinks of 2 ledgered source(s)" in exported
  assert "Retained probes" in exported
  report = json.loads((tmp_path / "export" / "collateral.json").read_text())
  assert report["other_sources"] == {"count": 38, "exact": True, "population": 40}
  assert inference.load_run(tmp_path / "export").ledger.ids.tolist() == [5, 7]  # still refused
  hf = nullearn("export", w, f"--out={tmp_path / 'hf'}", "--format=hf", "--switch=backbone")
  assert "transformers Llama" in hf.stdout
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["intermediate_size"] == 8


def test_a_corrupt_ledger_stops_every_load(run_dir, tmp_path):
  run = shutil.copytree(run_dir, tmp_path / "run")
  (run / "forget_ledger.jsonl").write_text(
    '{"id": 1, "name": "a", "reason": "r", "time": "t", "user": "u"}\n{"id": 3, "name": "x"\n'
  )
  for args in (
    ("generate", "--prompt=Hi"),
    ("forget", "--list"),
    ("forget", "--sources=3", "--reason=r"),
  ):
    refused(
      nullearn(args[0], f"--workdir={run}", *args[1:], ok=False),
      args[0],
      "forget_ledger.jsonl:2: invalid JSON",
    )
