import json

import pytest

from conftest import small_config
from nullearn import demo, inference


@pytest.mark.slow  # ~40 s; the fast demo tests run demo.run
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


def test_two_runs_write_the_same_demo_json(tmp_path):
  """Same config, same machine: byte-identical demo.json, training in parallel processes
  as `nullearn demo` does (no timings, no unordered sets, no unseeded draws)."""
  c = small_config(vocab_size=512)
  c.train.steps = 6
  c.demo.parallel = True
  first, second = (tmp_path / "a", tmp_path / "b")
  for workdir in (first, second):
    demo.run(c, workdir)
  text = (first / "demo.json").read_text()
  assert json.loads(text)["num_probes"] == 28
  assert text == (second / "demo.json").read_text()


def small_world_config():
  """The demo at a fifth of its size: 200 sources, 20 forgotten, about 2 minutes on 2 cores."""
  from nullearn.configs import tiny

  c = tiny.get_config()
  c.factworld.update(dict(num_sources=200, sources_per_group=10))
  c.model.update(
    dict(
      d_model=64,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      backbone=32,
      pool=512,
      active=16,
      vocab_size=512,
    )
  )
  c.train.update(dict(epochs=20.0, warmup_steps=20, log_every=50, progress=False))
  c.demo.update(dict(num_forget=20))
  return c


def test_small_demo_switch_separates_unique_from_shared_facts(tmp_path):
  """Switched off, a source's own facts fall to the oracle's level while its region's stay.

  Fails if the switch stops separating them: a switch that excluded nothing keeps
  the unique facts, one that switched every sink off loses the shared ones.
  """
  result = demo.run(small_world_config(), tmp_path)
  t = result["table"]
  unique, shared = ({c: t[c][k].median for c in t} for k in ("unique", "shared"))
  assert unique["sink on"] >= 2.0, unique
  assert abs(unique["switched off"] - unique["oracle"]) <= 0.3, unique
  kept_unique = unique["switched off"] / unique["sink on"]
  kept_shared = shared["switched off"] / shared["sink on"]
  assert kept_shared - kept_unique >= 0.4, (unique, shared)
  assert shared["switched off"] > shared["backbone only"] + 0.5, shared


@pytest.mark.slow
def test_full_demo_meets_its_claims(tmp_path):
  """The default demo: ~7 minutes on 2 cores."""
  from nullearn.configs import tiny

  result = demo.run(tiny.get_config(), tmp_path)
  failed = [c.claim for c in result["claims"] if not c.holds]
  assert not failed, failed
