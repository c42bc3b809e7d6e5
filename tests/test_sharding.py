import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from conftest import small_config
from nullearn import sharding, train
from nullearn.data import pipeline
from nullearn.masks import SinkGeometry

MESHES = [
  dict(data=2, fsdp=4, tensor=1),
  dict(data=1, fsdp=2, tensor=4),
  dict(data=2, fsdp=2, tensor=2),
]


def test_eight_devices():
  assert jax.device_count() == 8, "conftest fakes 8 CPU devices"


def run_steps(config, mesh, batches):
  setup = train.make_setup(config, steps=20, mesh=mesh)
  state = train.init_state(setup)
  step = train.make_train_step(setup)
  losses = []
  with jax.set_mesh(mesh):
    for batch in batches:
      state, m = step(state, train.device_batch(batch, mesh))
      losses.append(float(m["loss"]))
  return jax.tree.map(np.asarray, jax.device_get(state.params)), losses


@pytest.mark.parametrize("impl", [pytest.param("dense", marks=pytest.mark.slow), "gather"])
def test_sharded_step_equals_single_device(world, tokenizer, impl):
  c = small_config(sink_impl=impl)
  c.train.warmup_steps = 1
  it = iter(pipeline.make_dataset(c, world.documents, tokenizer))
  batches = [next(it) for _ in range(3)]
  ref_params, ref_losses = run_steps(c, sharding.make_mesh(1, 1, 1), batches)
  for sizes in MESHES[:2] if impl == "gather" else MESHES:
    params, losses = run_steps(c, sharding.make_mesh(**sizes), batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, err_msg=str(sizes))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=str(sizes))


def test_parameters_are_actually_sharded():
  c = small_config()
  setup = train.make_setup(c, steps=10, mesh=sharding.make_mesh(2, 2, 2))
  specs = jax.tree.map(lambda s: s.spec, setup.state_shardings.params)
  assert specs["embed"] == P("tensor", "fsdp")  # (vocab, embed)
  assert specs["blocks"][0]["mlp"]["w_gate"] == P("fsdp", "tensor")  # (embed, mlp)
  assert specs["blocks"][0]["mlp"]["w_down"] == P("tensor", "fsdp")
  assert specs["blocks"][0]["attn"]["wq"] == P("fsdp", "tensor", None)  # (embed, heads, head_dim)
  assert specs["blocks"][0]["attn"]["wk"] == P("fsdp", None, None)  # 1 KV head: replicated
  mu = setup.state_shardings.opt_state[1][0].mu  # AdamW moments follow their parameters
  assert mu["blocks"][0]["mlp"]["w_gate"].spec == P("fsdp", "tensor")


def test_logical_rules_fall_back_when_not_divisible():
  mesh = sharding.make_mesh(2, 2, 2)
  assert sharding.logical_to_spec(("batch", "length"), (8, 16), mesh) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec(("batch", "length"), (2, 16), mesh) == P("data", None)
  assert sharding.logical_to_spec(("embed", "kv_heads"), (10, 5), mesh) == P("fsdp", None)
  assert sharding.logical_to_spec(("embed", "mlp"), (7, 8), mesh) == P(None, "tensor")
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh(4, 4, 1)
  assert dict(sharding.make_mesh(2, -1, 1).shape) == {"data": 2, "fsdp": 4, "tensor": 1}


def test_masks_are_identical_whichever_device_computes_them():
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, 64, dtype=np.uint32))
  geometry = SinkGeometry(0, 1024, 32, mask_seed=7)
  want = np.asarray(geometry.mask(ids))  # one device, unsharded
  mesh = sharding.make_mesh(8, 1, 1)
  fn = jax.jit(
    geometry.mask,
    in_shardings=NamedSharding(mesh, P("data")),
    out_shardings=NamedSharding(mesh, P("data")),
  )
  for order in (np.arange(64), np.arange(64)[::-1], np.roll(np.arange(64), 8)):
    got = fn(ids[order])  # each id lands on a different device in each order
    assert len({d for s in got.addressable_shards for d in [s.device]}) == 8
    np.testing.assert_array_equal(np.asarray(got), want[order])


@pytest.mark.slow  # ~40 s; test_checkpoint loads across topologies in the default suite
def test_restore_onto_a_different_mesh(world, tokenizer, tmp_path):
  c = small_config()
  c.train.steps = 8
  mesh_a, mesh_b = sharding.make_mesh(2, 4, 1), sharding.make_mesh(1, 2, 4)
  straight = train.train(c, tmp_path / "a", world.documents, tokenizer, mesh=mesh_a)
  train.train(c, tmp_path / "b", world.documents, tokenizer, mesh=mesh_a, stop_after=4)
  moved = train.train(c, tmp_path / "b", world.documents, tokenizer, mesh=mesh_b)
  w = moved.state.params["blocks"][0]["mlp"]["w_gate"]
  assert w.sharding.spec == P("fsdp", "tensor") and w.sharding.mesh.shape["tensor"] == 4
  np.testing.assert_allclose(
    [r["loss"] for r in moved.history], [r["loss"] for r in straight.history[4:]], rtol=2e-5
  )
  for a, b in zip(
    jax.tree.leaves(jax.device_get(straight.state.params)),
    jax.tree.leaves(jax.device_get(moved.state.params)),
  ):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
