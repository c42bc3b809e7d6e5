import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model
from nullearn import attention
from nullearn.model import Transformer
from nullearn.switch import Switch

CFG = tiny_model(attention="reference")


def packed_rows(B=3, T=128, seed=0):
  """Rows of several documents of random lengths, then padding (segment 0) at the end."""
  rng = np.random.default_rng(seed)
  seg = np.zeros((B, T), np.int32)
  pos = np.zeros((B, T), np.int32)
  for b in range(B):
    cuts = np.sort(rng.choice(np.arange(1, T - 8), 3, replace=False))
    for s, (lo, hi) in enumerate(zip(np.r_[0, cuts[:-1]], cuts), 1):
      seg[b, lo:hi], pos[b, lo:hi] = s, np.arange(hi - lo)
  return seg, pos


def qkv(B, T, H, G, K, seed=0):
  rng = np.random.default_rng(seed)
  draw = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return draw(B, T, H, K), draw(B, T, G, K), draw(B, T, G, K)


def test_segment_causal_mask_by_hand():
  seg = jnp.asarray([[1, 1, 2, 2, 0]])
  expected = np.asarray(
    [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], bool
  )
  np.testing.assert_array_equal(attention.segment_causal_mask(seg)[0], expected)


@pytest.mark.parametrize("impl", ["xla", "auto"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)])
def test_runnable_implementations_equal_the_reference(impl, heads):
  H, G = heads
  seg, _ = packed_rows()
  q, k, v = qkv(3, 128, H, G, 16)
  ref = attention.attend(q, k, v, jnp.asarray(seg), "reference")
  out = attention.attend(q, k, v, jnp.asarray(seg), impl)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)


def test_no_implementation_crosses_a_document_boundary():
  """Changing one document's keys and values changes no other document's outputs."""
  seg, _ = packed_rows(B=1)
  q, k, v = qkv(1, 128, 4, 2, 16)
  second = jnp.asarray(seg == 2)[..., None, None]
  k2, v2 = jnp.where(second, k + 3.0, k), jnp.where(second, -v, v)
  for impl in ("reference", "xla"):
    a = attention.attend(q, k, v, jnp.asarray(seg), impl)
    b = attention.attend(q, k2, v2, jnp.asarray(seg), impl)
    others = ~second[..., 0, 0][0]
    np.testing.assert_allclose(a[0, others], b[0, others], atol=1e-6)
    assert not np.allclose(a[0, ~others], b[0, ~others])


def test_splash_kernel_equals_the_reference_interpreted():
  """The TPU Pallas kernel itself, run by Pallas's interpreter on this host's CPU."""
  seg, _ = packed_rows(B=2, T=256)
  q, k, v = qkv(2, 256, 4, 2, 16)
  ref = attention.attend(q, k, v, jnp.asarray(seg), "reference")
  out = attention._splash_local(q, k, v, jnp.asarray(seg), interpret=True)
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)


def test_auto_picks_the_hosts_kernel():
  assert attention.resolve("auto", jnp.float32, "cpu") == "xla"
  assert attention.resolve("auto", jnp.float32, "tpu") == "splash"
  assert attention.resolve("auto", jnp.bfloat16, "gpu") == "cudnn"
  assert attention.resolve("auto", jnp.float32, "gpu") == "xla"  # cuDNN's kernel is 16-bit
  assert attention.resolve("cudnn", jnp.bfloat16, "gpu") == "cudnn"


@pytest.mark.parametrize("impl, needs", [("splash", "tpu"), ("cudnn", "gpu")])
def test_a_kernel_of_another_backend_is_a_one_line_error(impl, needs):
  if jax.default_backend() == needs:
    pytest.skip(f"this host has a {needs}")
  model = Transformer(dataclasses.replace(CFG, attention=impl), nnx.Rngs(0))
  seg, pos = packed_rows(B=1, T=16)
  with pytest.raises(
    ValueError,
    match=f"^model.attention: '{impl}' runs on {needs} only, "
    f"this host's backend is {jax.default_backend()}$",
  ):
    model(
      jnp.ones((1, 16), jnp.int32),
      jnp.asarray(seg),
      jnp.asarray(pos),
      Switch.sources(jnp.full((1, 16), 3)),
    )
  with pytest.raises(ValueError, match="attention must be one of"):
    dataclasses.replace(CFG, attention="flash")


@pytest.mark.parametrize("impl", ["xla", "auto"])
@pytest.mark.parametrize("sink_impl", ["dense", "gather"])
def test_model_logits_do_not_depend_on_the_kernel(impl, sink_impl):
  cfg = dataclasses.replace(CFG, sink_impl=sink_impl)
  seg, pos = packed_rows(B=2, T=64, seed=3)
  tokens = jnp.asarray(np.random.default_rng(1).integers(4, 64, seg.shape), jnp.int32)
  switch = Switch.sources(jnp.asarray(seg * 11 + 5), exclude=[16])
  ref_model = Transformer(cfg, nnx.Rngs(0))
  model = Transformer(dataclasses.replace(cfg, attention=impl), nnx.Rngs(0))
  ref = ref_model(tokens, jnp.asarray(seg), jnp.asarray(pos), switch)
  out = model(tokens, jnp.asarray(seg), jnp.asarray(pos), switch)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
