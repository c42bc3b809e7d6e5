"""The Colab notebook runs against a real (tiny) run: its code cells are executed."""

import json
import pathlib

from conftest import small_config
from nullearn import train

NOTEBOOK = pathlib.Path(__file__).parents[1] / "notebooks" / "evaluate_checkpoint.ipynb"


def code_cells():
  nb = json.loads(NOTEBOOK.read_text())
  return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_cells_run(world, tokenizer, tmp_path, monkeypatch):
  c = small_config()
  c.train.steps = 2
  for name in ("null", "oracle"):
    train.train(c, tmp_path / name, world.documents, tokenizer)
    tokenizer.save(tmp_path / name / "tokenizer.model")
  monkeypatch.chdir(tmp_path)
  scope = {}
  for source in code_cells():
    if "WORKDIR =" in source:  # the parameters cell, pointed at the tiny runs
      source = 'WORKDIR = "null"\nORACLE = "oracle"\nFORGET = [3, 13]\n'
    exec(compile(source, str(NOTEBOOK), "exec"), scope)
  assert (tmp_path / "report" / "report.md").exists()
  assert scope["forget"] == [3, 13]
