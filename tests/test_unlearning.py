import math

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from nullearn import inference, losses, train, unlearning
from nullearn import model as model_lib
from nullearn.data import pipeline
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch

SEQ_LEN = 32
NUM_FORGET = 4
BATCH = 8  # one batch shape everywhere: each function compiles once per module
UNLEARN = dict(steps=5, lr=1e-3, batch_size=BATCH)


@pytest.fixture(scope="module")
def run(world, tokenizer, tmp_path_factory):
  c = small_config()
  c.train.steps = 40
  r = train.train(c, tmp_path_factory.mktemp("run"), world.documents, tokenizer)
  return inference.Run(r.setup.model_cfg, r.setup.graphdef, r.state.params, tokenizer, {})


@pytest.fixture(scope="module")
def forget_rows(world, tokenizer):
  forget = sorted({d.source_id for d in world.documents})[:NUM_FORGET]
  docs = [d for d in world.documents if d.source_id in forget]
  return pipeline.document_rows(tokenizer, docs, SEQ_LEN)


@pytest.fixture(scope="module")
def ga_params(run, forget_rows):
  return unlearning.unlearn(run, forget_rows, method="ga", **UNLEARN)


def leaves(params):
  return jax.tree.leaves(jax.device_get(params))


def nll(run, rows, params=None):
  return unlearning.heldout_nll(run, rows, params=params, batch_size=BATCH)


def test_ga_loss_by_hand():
  assert float(unlearning.ga_loss(np.array([2.0, 4.0]))) == pytest.approx(-3.0)


def test_gd_loss_by_hand():
  loss = unlearning.gd_loss(np.array([2.0, 4.0]), np.array([1.0, 3.0, 8.0]))
  assert float(loss) == pytest.approx(-3.0 + 4.0)


def test_npo_loss_by_hand():
  logp, logp_ref = np.array([-1.0, -2.0]), np.array([-1.5, -1.0])
  # beta (logp - logp_ref) = [0.05, -0.1]; -log_sigmoid(-z) = log(1 + e^z).
  expected = (2 / 0.1) * (math.log(1 + math.exp(0.05)) + math.log(1 + math.exp(-0.1))) / 2
  assert float(unlearning.npo_loss(logp, logp_ref, 0.1)) == pytest.approx(expected, rel=1e-6)
  with_retain = unlearning.npo_loss(logp, logp_ref, 0.1, nll_retain_B=np.array([3.0, 5.0]))
  assert float(with_retain) == pytest.approx(expected + 4.0, rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_npo_loss_at_the_reference(beta):
  logp = np.array([-3.0, -7.5, -0.2])
  assert float(unlearning.npo_loss(logp, logp, beta)) == pytest.approx(2 / beta * math.log(2))


def test_ga_raises_forget_nll(run, forget_rows, ga_params):
  assert nll(run, forget_rows, ga_params) > nll(run, forget_rows) + 0.05
  assert jax.tree.structure(ga_params) == jax.tree.structure(run.params)


def test_npo_raises_forget_nll_from_2_over_beta_log_2(run, forget_rows):
  history = []
  params = unlearning.unlearn(
    run,
    forget_rows,
    method="npo",
    beta=0.1,
    on_step=lambda step, loss: history.append((step, loss)),
    **UNLEARN,
  )
  assert [s for s, _ in history] == list(range(1, UNLEARN["steps"] + 1))
  assert history[0][1] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)
  assert history[-1][1] < history[0][1]
  assert nll(run, forget_rows, params) > nll(run, forget_rows) + 0.05


def test_gd_needs_retain_rows(run, forget_rows):
  with pytest.raises(ValueError, match="rows_retain"):
    unlearning.unlearn(run, forget_rows, method="gd", **UNLEARN)


def test_unknown_method_and_bad_rows_are_refused(run, forget_rows):
  with pytest.raises(ValueError, match="method must be one of"):
    unlearning.unlearn(run, forget_rows, method="kl", **UNLEARN)
  partial = {k: v for k, v in forget_rows.items() if k != "weights"}
  with pytest.raises(ValueError, match=r"lack \['weights'\]"):
    unlearning.heldout_nll(run, partial)


def test_unlearning_is_deterministic_in_the_seed(run, forget_rows):
  short = dict(UNLEARN, steps=2)
  first = unlearning.unlearn(run, forget_rows, method="ga", **short)
  again = unlearning.unlearn(run, forget_rows, method="ga", **short)
  other = unlearning.unlearn(run, forget_rows, method="ga", seed=1, **short)
  for a, b in zip(leaves(first), leaves(again)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(first), leaves(other)))


def test_relearning_snapshots_lower_the_nll(run, forget_rows, ga_params):
  snapshots = unlearning.finetune_snapshots(
    run, forget_rows, step_counts=(6, 1, 3), lr=1e-3, batch_size=BATCH, params=ga_params
  )
  assert list(snapshots) == [1, 3, 6]
  curve = [nll(run, forget_rows, p) for p in (ga_params, *snapshots.values())]
  assert all(later < earlier for earlier, later in zip(curve, curve[1:])), curve


def test_snapshot_at_zero_steps_only_when_asked(run, forget_rows):
  snapshots = unlearning.finetune_snapshots(
    run, forget_rows, step_counts=(0, 2), lr=1e-3, batch_size=BATCH
  )
  assert list(snapshots) == [0, 2]
  assert snapshots[0] is run.params
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(snapshots[0]), leaves(snapshots[2])))


def direct_nll(graphdef, params, rows):
  """All rows in one forward pass, one token-weighted mean."""
  logits = nnx.merge(graphdef, params)(
    rows["inputs"], rows["segment_ids"], rows["positions"], Switch.sources(rows["source_ids"])
  )
  return losses.mean_nll(logits, rows["targets"], rows["weights"])[0]


def test_heldout_nll_is_token_weighted(run, forget_rows):
  tokens_R = forget_rows["weights"].sum(-1)
  order = np.argsort(tokens_R)
  pick = np.array([order[-1], order[-2], order[0]])  # two full rows, then the shortest
  rows = {k: v[pick] for k, v in forget_rows.items()}
  assert tokens_R[pick[2]] < tokens_R[pick[0]]
  direct = jax.jit(direct_nll, static_argnums=0)(run.graphdef, run.params, rows)
  # Batches of 2: 2 full rows, then the short one padded with a copy of itself.
  got = unlearning.heldout_nll(run, rows, batch_size=2)
  assert got == pytest.approx(float(direct), rel=1e-5)
  per_batch = [
    unlearning.heldout_nll(run, {k: v[s] for k, v in rows.items()}, batch_size=2)
    for s in (slice(0, 2), slice(2, 3))
  ]
  assert abs(np.mean(per_batch) - got) > 1e-3  # the rows tell the two means apart


def test_plain_model_needs_no_switch(tokenizer, forget_rows):
  cfg = ModelConfig(
    vocab_size=512,
    d_model=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    backbone=24,
    pool=0,
  )
  graphdef, _, _ = model_lib.abstract(cfg)
  params = jax.jit(lambda: nnx.to_pure_dict(nnx.state(Transformer(cfg, nnx.Rngs(0)))))()
  plain = inference.Run(cfg, graphdef, params, tokenizer, {})
  default = nll(plain, forget_rows)
  assert (
    unlearning.heldout_nll(plain, forget_rows, switch_for=lambda ids: None, batch_size=BATCH)
    == default
  )
  assert default == pytest.approx(math.log(512), abs=0.05)  # near-uniform at init
