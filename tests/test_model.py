import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model
from nullearn.configs import base
from nullearn.masks import SinkGeometry
from nullearn.model import (
  ModelConfig,
  SinkMLP,
  Transformer,
  param_count,
  stack_layers,
  unstack_layers,
)
from nullearn.switch import Switch

CFG = tiny_model(mask_seed=0)
GEOMETRY = SinkGeometry(backbone=8, pool=64, active=4)


def packed_row(lengths=(10, 12, 6), T=32, ids=(7, 8, 9), seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((1, T), np.int32)
  seg = np.zeros((1, T), np.int32)
  pos = np.zeros((1, T), np.int32)
  src = np.zeros((1, T), np.int64)
  start = 0
  for s, (n, sid) in enumerate(zip(lengths, ids), 1):
    tokens[0, start : start + n] = rng.integers(4, 64, n)
    seg[0, start : start + n] = s
    pos[0, start : start + n] = np.arange(n)
    src[0, start : start + n] = sid
    start += n
  return tokens, seg, pos, src


def forward(model, tokens, seg, pos, switch):
  return np.asarray(model(jnp.asarray(tokens), jnp.asarray(seg), jnp.asarray(pos), switch))


@pytest.mark.parametrize("impl", ["dense", "gather"])
def test_no_attention_across_documents(impl):
  model = Transformer(dataclasses.replace(CFG, sink_impl=impl), nnx.Rngs(0))
  tokens, seg, pos, src = packed_row()
  base_logits = forward(model, tokens, seg, pos, Switch.sources(src))
  changed = tokens.copy()
  changed[0, :10] = (changed[0, :10] + 5) % 60 + 4  # rewrite the first document only
  new_logits = forward(model, changed, seg, pos, Switch.sources(src))
  first, others = seg[0] == 1, seg[0] > 1
  assert not np.allclose(base_logits[0, first], new_logits[0, first])
  np.testing.assert_array_equal(base_logits[0, others], new_logits[0, others])


def test_packed_equals_alone():
  """A document's logits are the same packed behind another as on its own."""
  model = Transformer(CFG, nnx.Rngs(1))
  tokens, seg, pos, src = packed_row(lengths=(10, 12), ids=(3, 4))
  packed = forward(model, tokens, seg, pos, Switch.sources(src))
  alone_tokens = np.zeros_like(tokens)
  alone_tokens[0, :12] = tokens[0, 10:22]
  alone_seg = (np.arange(32) < 12).astype(np.int32)[None]
  alone = forward(
    model, alone_tokens, alone_seg, np.arange(32)[None], Switch.sources(np.full((1, 32), 4))
  )
  np.testing.assert_allclose(packed[0, 10:22], alone[0, :12], rtol=1e-5, atol=1e-5)


def test_pool_zero_is_a_plain_swiglu_mlp():
  cfg = dataclasses.replace(CFG, backbone=40, pool=0)
  mlp = SinkMLP(cfg, nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 32))
  want = (jax.nn.silu(x @ mlp.w_gate[...]) * (x @ mlp.w_up[...])) @ mlp.w_down[...]
  np.testing.assert_allclose(mlp(x, None), want, rtol=1e-6)
  model = Transformer(cfg, nnx.Rngs(0))
  tokens, seg, pos, src = packed_row()
  a = forward(model, tokens, seg, pos, None)
  b = forward(model, tokens, seg, pos, Switch.backbone())  # no sinks: every switch is moot
  np.testing.assert_array_equal(a, b)


def test_sink_model_requires_a_switch():
  model = Transformer(CFG, nnx.Rngs(0))
  tokens, seg, pos, _ = packed_row()
  with pytest.raises(ValueError, match="Switch"):
    forward(model, tokens, seg, pos, None)


def _zero_pool_outputs(model, cfg):
  for block in model.blocks:
    block.mlp.w_down[...] = block.mlp.w_down[...].at[cfg.backbone :].set(0.0)


def test_backbone_mode_switches_every_sink_off():
  model = Transformer(CFG, nnx.Rngs(0))
  tokens, seg, pos, src = packed_row()
  backbone = forward(model, tokens, seg, pos, Switch.backbone())
  on = forward(model, tokens, seg, pos, Switch.sources(src))
  assert not np.allclose(backbone, on)
  _zero_pool_outputs(model, CFG)  # a model whose sinks contribute nothing
  np.testing.assert_allclose(
    forward(model, tokens, seg, pos, Switch.sources(src)), backbone, rtol=1e-5, atol=1e-5
  )


def test_source_mode_mask_is_backbone_plus_own_sinks():
  ids = np.array([[0, 5, 2**32 - 1]])
  m = np.asarray(Switch.sources(ids).mlp_mask(GEOMETRY, jnp.float32))
  assert m.shape == (1, 3, 72)
  for t, sid in enumerate(ids[0]):
    assert m[0, t, :8].tolist() == [1.0] * 8
    assert np.flatnonzero(m[0, t, 8:]).tolist() == GEOMETRY.sink_indices(sid).tolist()


def test_expected_mode_is_active_over_pool():
  m = np.asarray(Switch.expected().mlp_mask(GEOMETRY, jnp.float32))
  np.testing.assert_allclose(m, np.r_[np.ones(8), np.full(64, 4 / 64)])


@pytest.mark.parametrize("mode", ["source", "expected"])
def test_exclude_removes_exactly_the_forgotten_sinks(mode):
  forgotten = [11, 12, 13]
  gone = set().union(*(GEOMETRY.sink_indices(f) for f in forgotten))
  ids = np.arange(100, 140)[None]
  if mode == "source":
    before = Switch.sources(ids).mlp_mask(GEOMETRY, jnp.float32)
    after = Switch.sources(ids, exclude=forgotten).mlp_mask(GEOMETRY, jnp.float32)
  else:
    before = Switch.expected().mlp_mask(GEOMETRY, jnp.float32)[None, None]
    after = Switch.expected(exclude=forgotten).mlp_mask(GEOMETRY, jnp.float32)[None, None]
  before, after = np.asarray(before)[0], np.asarray(after)[0]
  removed = {(t, j - 8) for t, j in zip(*np.nonzero((before > 0) & (after == 0)))}
  assert all(j in gone for _, j in removed)
  for t in range(before.shape[0]):
    kept = set(np.flatnonzero(after[t, 8:]))
    assert kept == set(np.flatnonzero(before[t, 8:])) - gone
  assert np.array_equal(before[:, :8], after[:, :8])  # the backbone is never excluded


def test_excluding_a_source_leaves_it_the_backbone():
  model = Transformer(CFG, nnx.Rngs(0))
  tokens, seg, pos, _ = packed_row(lengths=(20,), ids=(42,))
  src = np.full_like(tokens, 42)
  off = forward(model, tokens, seg, pos, Switch.sources(src, exclude=[42]))
  np.testing.assert_allclose(
    off, forward(model, tokens, seg, pos, Switch.backbone()), rtol=1e-5, atol=1e-5
  )


def _sharing_pair(pool=64, active=4):
  """Two sources with a sink in common: packing them together must not double it."""
  m = np.asarray(SinkGeometry(0, pool, active).mask(jnp.arange(1, 50, dtype=jnp.uint32)), int)
  shared = np.triu(m @ m.T, 1)
  a, b = np.argwhere(shared > 0)[0]
  return int(a) + 1, int(b) + 1


def test_gathered_sinks_equal_dense_mask():
  a, b = _sharing_pair()
  tokens, seg, pos, src = packed_row(lengths=(9, 11, 7), ids=(a, b, 77))
  tokens, seg, pos, src = (
    np.concatenate([x, np.roll(x, 3, axis=1)]) for x in (tokens, seg, pos, src)
  )
  switch = Switch.sources(src, exclude=[77, 5])
  real = seg > 0  # padding never reaches a real token; the two differ only there
  outs = {}
  for impl in ("dense", "gather"):
    cfg = dataclasses.replace(CFG, sink_impl=impl, max_segments=3)
    graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    loss = lambda p, g=graphdef: jnp.sum(
      (nnx.merge(g, p)(tokens, seg, pos, switch) ** 2) * real[..., None]
    )
    outs[impl] = (
      forward(nnx.merge(graphdef, params), tokens, seg, pos, switch)[real],
      jax.grad(loss)(params),
    )
  np.testing.assert_allclose(outs["dense"][0], outs["gather"][0], rtol=1e-4, atol=1e-5)
  for x, y in zip(jax.tree.leaves(outs["dense"][1]), jax.tree.leaves(outs["gather"][1])):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)


def test_1b_config_is_about_one_billion_parameters():
  import importlib

  from nullearn.configs import __path__ as configs_path

  cfg = importlib.import_module("nullearn.configs.1b").get_config()
  model_cfg = ModelConfig.from_config(cfg.model)
  assert (
    model_cfg.num_layers,
    model_cfg.d_model,
    model_cfg.num_heads,
    model_cfg.num_kv_heads,
    model_cfg.head_dim,
    model_cfg.backbone,
    model_cfg.pool,
    model_cfg.active,
    model_cfg.vocab_size,
  ) == (32, 960, 15, 5, 128, 500, 7692, 100, 49152)
  assert model_cfg.mlp_dim == 8192
  n = param_count(model_cfg)  # eval_shape: nothing is allocated
  assert 0.95e9 < n < 1.05e9, n
  del configs_path


def test_config_errors():
  with pytest.raises(ValueError, match="num_kv_heads"):
    ModelConfig(num_heads=5, num_kv_heads=2)
  with pytest.raises(ValueError, match="active"):
    ModelConfig(pool=16, active=17)
  with pytest.raises(ValueError, match="unknown model config keys"):
    ModelConfig.from_config({**base.get_config().model.to_dict(), "d_modle": 3})


def test_gather_falls_back_to_dense_for_rows_it_cannot_represent():
  """Concrete rows of more documents than slots, or without any document, are computed densely."""
  tokens, seg, pos, src = packed_row(lengths=(6, 7, 5, 8), ids=(3, 4, 5, 6))
  outs = {}
  for impl in ("dense", "gather"):
    cfg = dataclasses.replace(CFG, sink_impl=impl, max_segments=2)  # 4 documents, 2 slots
    model = Transformer(cfg, nnx.Rngs(0))
    outs[impl] = forward(model, tokens, seg, pos, Switch.sources(src))
    outs[impl + " no segments"] = forward(
      model, tokens, np.zeros_like(seg), pos, Switch.sources(src)
    )
  real = seg > 0
  np.testing.assert_allclose(outs["gather"][real], outs["dense"][real], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    outs["gather no segments"], outs["dense no segments"], rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize(
  "ids,match",
  [
    (jnp.asarray([[-1]]), "out of range"),
    (np.asarray([[1.7]]), "integers"),
    (jnp.asarray([[1.7]]), "integers"),
    (np.asarray([[True]]), "integers"),
    (np.arange(4), "per row"),  # (B,): per row or per token? refused, never guessed
    (np.zeros((1, 2, 3), np.int32), "per row"),
  ],
)
def test_switch_refuses_ids_it_cannot_read(ids, match):
  with pytest.raises(ValueError, match=match):
    Switch.sources(ids)
  if np.asarray(ids).ndim == 2:
    with pytest.raises(ValueError, match=match):
      Switch.expected(exclude=ids)


def test_switch_checks_traced_ids_by_dtype():
  with pytest.raises(ValueError, match="integers"):
    jax.jit(lambda x: Switch.sources(x).source_ids)(jnp.ones((1, 2), jnp.float32))
  got = jax.jit(lambda x: Switch.sources(x).source_ids)(jnp.asarray([[5, 6]], jnp.int32))
  assert got.dtype == jnp.uint32 and got.tolist() == [[5, 6]]


def test_per_row_exclusion_equals_one_row_at_a_time():
  model = Transformer(CFG, nnx.Rngs(0))
  tokens, seg, pos, src = packed_row(lengths=(20,), ids=(9,))
  tokens2, seg2, pos2, src2 = (np.concatenate([x, x]) for x in (tokens, seg, pos, src))
  per_row = forward(
    model, tokens2, seg2, pos2, Switch.sources(src2, exclude=np.asarray([[9, 9], [30, 31]]))
  )
  for row, exclude in enumerate(([9], [30, 31])):
    alone = forward(model, tokens, seg, pos, Switch.sources(src, exclude=exclude))
    np.testing.assert_allclose(per_row[row], alone[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(per_row[0], per_row[1])


def test_bfloat16_and_remat_compute_the_same_model():
  tokens, seg, pos, src = packed_row()
  switch = Switch.sources(src)
  graphdef, params = nnx.split(Transformer(CFG, nnx.Rngs(0)))
  f32 = forward(nnx.merge(graphdef, params), tokens, seg, pos, switch)
  bf16 = forward(
    Transformer(dataclasses.replace(CFG, dtype="bfloat16"), nnx.Rngs(0)), tokens, seg, pos, switch
  )
  real = seg > 0
  assert np.abs(bf16[real] - f32[real]).max() < 0.05 * np.abs(f32[real]).max()
  grads = {}
  for remat in (False, True):
    g, p = nnx.split(Transformer(dataclasses.replace(CFG, remat=remat), nnx.Rngs(0)))
    loss = lambda p, g=g: jnp.sum(nnx.merge(g, p)(tokens, seg, pos, switch) ** 2)
    grads[remat] = jax.grad(loss)(p)
  for x, y in zip(jax.tree.leaves(grads[False]), jax.tree.leaves(grads[True])):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["dense", "gather"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_scanned_layers_compute_the_unrolled_model(impl, per_layer):
  """From the same weights, scanned and unrolled blocks give equal logits and gradients."""
  cfg = dataclasses.replace(CFG, num_layers=3, sink_impl=impl, per_layer_masks=per_layer)
  tokens, seg, pos, src = packed_row()
  switch = Switch.sources(src)
  g_unrolled, p_unrolled = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  scanned_cfg = dataclasses.replace(cfg, scan_layers=True, remat="dots_saveable")
  g_scanned = nnx.graphdef(Transformer(scanned_cfg, nnx.Rngs(1)))
  pure = nnx.to_pure_dict(p_unrolled)
  stacked = stack_layers(pure)
  assert stacked["blocks"]["mlp"]["w_gate"].shape == (3, 32, 72)

  def logits_and_grads(graphdef, params):
    def loss(params):
      model = nnx.merge(graphdef, params)
      return jnp.sum(model(tokens, seg, pos, switch) ** 2), model(tokens, seg, pos, switch)

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return logits, grads

  logits_u, grads_u = logits_and_grads(g_unrolled, pure)
  logits_s, grads_s = logits_and_grads(g_scanned, stacked)
  np.testing.assert_allclose(logits_s, logits_u, rtol=1e-5, atol=1e-6)
  grads_s = unstack_layers(grads_s)
  for (path, x), y in zip(jax.tree.leaves_with_path(grads_u), jax.tree.leaves(grads_s)):
    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6, err_msg=str(path))
  # The sinks that get gradients: the same in every layer, unless each layer has its own.
  on = [np.abs(grads_s["blocks"][i]["mlp"]["w_down"][cfg.backbone :]).sum(-1) > 0 for i in range(3)]
  assert np.array_equal(on[0], on[1]) != per_layer
