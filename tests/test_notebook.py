"""The Colab notebook, executed top to bottom in a fresh kernel with one device, against a run
saved on 8 (faked) devices by another process, with a forget ledger and a prompt router."""

import os
import pathlib
import subprocess
import sys

import jax
import nbformat
import pytest
from nbclient import NotebookClient

from nullearn import inference
from nullearn.switch import Switch

NOTEBOOK = pathlib.Path(__file__).parents[1] / "notebooks" / "evaluate_checkpoint.ipynb"
WORKER = pathlib.Path(__file__).parent / "portable_worker.py"
FORGOTTEN, SHOWN = 3, 13  # a ledgered source; the source the notebook switches off


def nullearn(*args: str) -> subprocess.CompletedProcess:
  run = subprocess.run(
    [str(pathlib.Path(sys.executable).parent / "nullearn"), *args],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  return run


@pytest.fixture(scope="module")
def saved_run(tokenizer, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  tokenizer_path = workdir.parent / "tokenizer.model"
  tokenizer.save(tokenizer_path)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
  out = subprocess.run(
    [sys.executable, str(WORKER), "8", "save", str(workdir), str(tokenizer_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "saved from 8 devices" in out.stdout
  nullearn("forget", f"--workdir={workdir}", f"--sources={FORGOTTEN}", "--reason=a takedown")
  nullearn("router", f"--workdir={workdir}")
  return workdir


def _text(cell) -> str:
  """What a cell printed or displayed as text."""
  return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_the_notebook_runs_in_a_fresh_kernel_on_one_device(saved_run, world, tmp_path, monkeypatch):
  names = {d.source_id: d.source for d in world.documents}
  prompt = next(p.prompt for p in world.probes if p.source_id == SHOWN)
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # the kernel sees this machine's one CPU
  monkeypatch.setenv("NULLEARN_WORKDIR", str(saved_run))
  monkeypatch.setenv("NULLEARN_SOURCE", names[SHOWN])
  monkeypatch.setenv("NULLEARN_PROMPT", prompt)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert nb.metadata.accelerator == "GPU" and nb.metadata.colab.gpuType
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert "parameters" in code[1].metadata.tags
  NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  install, _, load, ledger, switch, evaluation = code

  # nullearn is importable here: the install cell only checks the versions, as in a runtime
  # where it was installed before.
  assert "already installed: checking versions only" in _text(install)
  assert f"jax {jax.__version__} (supported: >=0.10,<0.11)" in _text(install)
  assert "on 1 device(s) (cpu); 1 device(s) here" in _text(load)
  assert f"{names[FORGOTTEN]}: a takedown" in _text(ledger)

  run = inference.load_run(saved_run)  # what the notebook should have printed
  route = run.router().route(prompt, exclude=[SHOWN])
  on = inference.generate(run, prompt, Switch.sources(SHOWN), 16)
  off = inference.generate(run, prompt, Switch.sources(route.source, exclude=[SHOWN]), 16)
  assert f"sink on:       {on!r}" in _text(switch)
  assert f"switched off:  {off!r} (routed to {route.source})" in _text(switch)

  images = [o for o in evaluation.outputs if "image/png" in o.get("data", {})]
  assert images, [o.get("data", {}).keys() for o in evaluation.outputs]
  shown = "".join(o.get("data", {}).get("text/markdown", "") for o in evaluation.outputs)
  assert "# Unlearning report" in shown and f"{names[SHOWN]} (→" in shown
