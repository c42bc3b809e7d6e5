"""The ledger applied at load, the hard delete on disk, and the transformers Llama export."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from nullearn import export, inference, ledger, surgery, train
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch

FORGET = (3, 11, 26)


@pytest.fixture(scope="module")
def workdir(world, tokenizer, tmp_path_factory):
  """A NULL with per-layer masks (each layer its own sinks) and three ledgered sources."""
  root = tmp_path_factory.mktemp("run")
  c = small_config(per_layer_masks=True)
  c.train.steps = 30
  train.train(c, root, world.documents, tokenizer)
  tokenizer.save(root / "tokenizer.model")
  names = {d.source_id: d.source for d in world.documents}
  ledger.append(root, [(f, names[f]) for f in FORGET], "a test takedown")
  return root


def logits(run, switch, tokens_BxT):
  """The model's logits, past the ledger's refusal (the weights are what is tested)."""
  B, T = tokens_BxT.shape
  return np.asarray(
    run.model().module(
      tokens_BxT, np.ones((B, T), np.int32), np.broadcast_to(np.arange(T), (B, T)), switch
    )
  )


def sweep(geometry, layers):
  """Every source of the world, ids far outside it, and proof that some share sinks with
  the forgotten ones (else the sweep could not catch a sink zeroed for the wrong source)."""
  ids = list(range(40)) + [1000, 123_456, 2**32 - 1]
  shared = [
    s
    for s in ids
    if s not in FORGET
    and any(
      np.intersect1d(
        geometry.sink_indices(s, layer), surgery.removed_sinks(geometry, FORGET, layer)
      ).size
      for layer in layers
    )
  ]
  assert len(shared) > 10
  return ids


def test_the_ledger_is_applied_at_load_and_refused(workdir, world):
  raw = inference.load_run(workdir, apply_ledger=False)
  run = inference.load_run(workdir)
  assert run.ledger.ids.tolist() == sorted(FORGET) and not len(raw.ledger)
  tokens = run.tokenizer.encode_document(world.documents[5].text)[None, :24]
  kept = np.asarray([s for s in sweep(run.model_cfg.geometry, range(2)) if s not in FORGET])
  rows = np.repeat(tokens, len(kept), axis=0)
  np.testing.assert_allclose(
    logits(run, Switch.sources(kept[:, None]), rows),
    logits(raw, Switch.sources(kept[:, None], exclude=FORGET), rows),
    rtol=1e-5,
    atol=1e-5,
  )
  for s in FORGET:
    with pytest.raises(ledger.ForgottenSourceError, match=f"source {s} .* a test takedown"):
      run.model()(
        rows[:2], np.ones_like(rows[:2]), np.arange(24)[None], Switch.sources(np.array([[0], [s]]))
      )
  probe = next(p for p in world.probes if p.source_id == FORGET[0])
  with pytest.raises(ledger.ForgottenSourceError):
    inference.generate(run, probe.prompt, Switch.sources(FORGET[0]))
  with pytest.raises(ledger.ForgottenSourceError):
    inference.option_nll(run, [probe], inference.per_token_switch([FORGET[0]]))


def test_the_export_holds_no_forgotten_sink(workdir, world, tmp_path):
  raw = inference.load_run(workdir, apply_ledger=False)
  out = export.export_checkpoint(inference.load_run(workdir), tmp_path / "export")
  exported = inference.load_run(out, apply_ledger=False)  # the weights on disk, as they are
  geometry = raw.model_cfg.geometry
  for layer, mlp in surgery.mlp_layers(exported.params):
    cols = geometry.backbone + surgery.removed_sinks(geometry, FORGET, layer)
    assert not np.any(mlp["w_gate"][:, cols]) and not np.any(mlp["w_up"][:, cols])
    assert not np.any(mlp["w_down"][cols])
    kept = np.setdiff1d(np.arange(geometry.width), cols)
    np.testing.assert_array_equal(
      mlp["w_up"][:, kept], raw.params["blocks"][layer]["mlp"]["w_up"][:, kept]
    )
  tokens = raw.tokenizer.encode_document(world.documents[7].text)[None, :24]
  ids = np.asarray(sweep(geometry, range(2)))[:, None]  # the forgotten too: their sinks are gone
  rows = np.repeat(tokens, len(ids), axis=0)
  np.testing.assert_allclose(
    logits(exported, Switch.sources(ids), rows),
    logits(raw, Switch.sources(ids, exclude=FORGET), rows),
    rtol=1e-5,
    atol=1e-5,
  )
  np.testing.assert_allclose(
    logits(exported, Switch.expected(), tokens),
    logits(raw, Switch.expected(exclude=FORGET), tokens),
    rtol=1e-5,
    atol=1e-5,
  )
  assert inference.load_run(out).ledger.ids.tolist() == sorted(FORGET)  # still refused
  assert exported.meta["export"]["removed_sources"] == sorted(FORGET)
  with pytest.raises(ValueError, match="not empty"):
    export.export_checkpoint(inference.load_run(workdir), out)


def test_a_run_loads_into_scanned_layers_with_its_ledger_applied(workdir, world):
  """A per-layer checkpoint served by a scanned model: stacked weights, the same sinks gone."""
  run = inference.load_run(workdir)
  scanned = inference.load_run(workdir, dataclasses.replace(run.model_cfg, scan_layers=True))
  assert scanned.params["blocks"]["mlp"]["w_up"].shape[0] == 2
  for (_, mlp), (_, want) in zip(
    surgery.mlp_layers(scanned.params), surgery.mlp_layers(run.params), strict=True
  ):
    np.testing.assert_array_equal(mlp["w_down"], want["w_down"])
  tokens = run.tokenizer.encode_document(world.documents[7].text)[None, :24]
  ids = np.asarray([s for s in range(40) if s not in FORGET])[:, None]
  rows = np.repeat(tokens, len(ids), axis=0)
  np.testing.assert_allclose(
    logits(scanned, Switch.sources(ids), rows),
    logits(run, Switch.sources(ids), rows),
    rtol=1e-5,
    atol=1e-5,
  )


def test_collateral_is_exact(workdir):
  run = inference.load_run(workdir)
  g = run.model_cfg.geometry
  others, exact = export.others_of(run.ledger, {s: str(s) for s in range(40)})
  report = export.collateral(g, run.model_cfg.num_layers, run.ledger, others, exact, 40)
  lost = {
    s: sum(
      len(
        set(g.sink_indices(s, layer)) & {int(i) for f in FORGET for i in g.sink_indices(f, layer)}
      )
      for layer in range(2)
    )
    for s in range(40)
    if s not in FORGET
  }
  assert exact and report["other_sources"]["count"] == 37
  assert report["sources_losing_any"] == sum(v > 0 for v in lost.values())
  assert report["lost_histogram"] == {
    str(k): list(lost.values()).count(k) for k in sorted(set(lost.values()))
  }
  assert report["own_sinks_per_source"] == 2 * g.active and report["layers_counted"] == 2
  md = export.collateral_markdown(report)
  assert f"{report['sources_losing_any']:,} ({report['fraction_losing_any']:.1%}) lost" in md
  sampled, exact = export.others_of(run.ledger, None)
  assert not exact and len(sampled) > 0.99 * export.SAMPLE and not np.isin(FORGET, sampled).any()
  estimate = export.collateral(g, run.model_cfg.num_layers, run.ledger, sampled, exact, 10**6)
  assert abs(estimate["fraction_losing_any"] - report["fraction_losing_any"]) < 0.2
  assert "standing for the 1,000,000 of the corpus" in export.collateral_markdown(estimate)


def random_run(tokenizer, **model):
  """A NULL with random weights (norm scales too), so every weight's place is tested."""
  cfg = ModelConfig(
    **{
      **dict(
        vocab_size=512,
        d_model=32,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        backbone=8,
        pool=64,
        active=4,
        per_layer_masks=True,
      ),
      **model,
    }
  )
  graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(
    tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  )
  return inference.Run(cfg, graphdef, params, tokenizer, {"config": {"data": {"seq_len": 64}}})


@pytest.mark.parametrize(
  "switch,scan_layers",
  [
    pytest.param("backbone", False, marks=pytest.mark.slow),
    pytest.param("expected", False, marks=pytest.mark.slow),
    ("expected", True),
  ],
)
def test_hf_llama_export_gives_our_logits(tokenizer, world, tmp_path, switch, scan_layers):
  """transformers loads the export (Flax backend, no torch) and computes our logits."""
  from transformers import AutoTokenizer, FlaxLlamaForCausalLM, LlamaTokenizer

  gone = ledger.Ledger((ledger.Entry(5, "five", "test", "now", "me"),))
  run = inference.with_ledger(
    random_run(tokenizer, tie_embeddings=switch == "backbone", scan_layers=scan_layers), gone
  )
  out = export.export_hf(run, tmp_path / "hf", switch)
  text = world.documents[2].text[:160]
  ids = tokenizer.encode_document(text)[:-1][None]
  ours = logits(run, Switch.backbone() if switch == "backbone" else Switch.expected(), ids)
  model = FlaxLlamaForCausalLM.from_pretrained(out)
  theirs = jax.jit(lambda p, x: model(x, params=p).logits)(model.params, ids)
  np.testing.assert_allclose(np.asarray(theirs), ours, atol=1e-4, rtol=0)
  config = json.loads((out / "config.json").read_text())
  assert config["intermediate_size"] == (8 if switch == "backbone" else 72)
  assert config["nullearn"]["removed_sources"] == [5]
  for hf_tokenizer in (LlamaTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(out)):
    assert hf_tokenizer(text).input_ids == ids[0].tolist()
    assert hf_tokenizer.decode(ids[0], skip_special_tokens=True) == tokenizer.decode(ids[0])


def test_hf_export_refuses_an_unknown_switch(tokenizer, tmp_path):
  with pytest.raises(ValueError, match="--switch"):
    export.export_hf(random_run(tokenizer), tmp_path / "hf", "source")
  assert not (tmp_path / "hf").exists()
