import json

import pytest

from conftest import small_config
from nullearn import demo, inference


def test_demo_writes_its_report(tmp_path, capsys):
  c = small_config(vocab_size=512)
  c.train.steps = 6
  result = demo.run(c, tmp_path)
  out = capsys.readouterr().out
  assert "unique facts" in out and "shared facts" in out and "claims:" in out
  saved = json.loads((tmp_path / "demo.json").read_text())
  assert set(saved["table"]) == set(demo.CONDITIONS)
  for cond in demo.CONDITIONS:
    for kind in demo.KINDS:
      assert saved["table"][cond][kind]["n"] == (16 if kind == "unique" else 12)
  assert {c["claim"].split(":")[0] for c in saved["claims"]} == {"sink on", "switched off"}
  assert (tmp_path / "demo.png").stat().st_size > 10_000
  assert set(saved["generation"]) >= {"prompt", "sink on", "switched off"}
  assert result["forgotten_sources"] == saved["forgotten_sources"]
  # the oracle's checkpoint records that it was trained without the forgotten sources
  oracle_meta = inference.load_run(tmp_path / "oracle").meta
  assert oracle_meta["data"]["excluded"] == sorted(result["forgotten_sources"])
  assert inference.load_run(tmp_path / "null").meta["data"]["excluded"] == []


@pytest.mark.slow
def test_full_demo_meets_its_claims(tmp_path):
  """The default demo: ~7 minutes on 2 cores."""
  from nullearn.configs import tiny
  result = demo.run(tiny.get_config(), tmp_path)
  failed = [c.claim for c in result["claims"] if not c.holds]
  assert not failed, failed
