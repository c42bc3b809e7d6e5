"""Segment-causal grouped-query attention: a token sees only earlier tokens of its own document.

Packed rows hold several documents, told apart by segment ids (0 is padding,
which attends only to padding). Implementations (`model.attention`):

  reference  float32 BxHxTxS logits masked by `segment_causal_mask`: the oracle.
  xla        `jax.nn.dot_product_attention(implementation="xla")` with the same mask.
  cudnn      cuDNN flash attention (GPU, bfloat16/float16): causal in the kernel, the
             segment mask as a bias.
  splash     the TPU Pallas splash kernel with segment ids: no TxS mask is materialised
             (rows of a length not a multiple of 128 take the xla path).
  auto       cudnn on a GPU (xla for float32, which cuDNN's kernel refuses), splash on
             a TPU, xla elsewhere.

Decoding against a KV cache (`cached`) is one query row per step and always
uses the reference math with an explicit mask over the cache's slots.

Shapes: B batch, T queries, S keys, H query heads, G KV heads, K head dim, L cache slots.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nullearn.sharding import logical_to_spec

IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "splash")
SPLASH_BLOCK = 128  # splash tiles rows whose length is a multiple of this (TPU lanes)
_NEEDS = {"cudnn": "gpu", "splash": "tpu"}


def resolve(name: str, dtype=jnp.float32, backend: str | None = None) -> str:
  """The implementation `name` stands for on `backend` (default: JAX's); one-line errors."""
  backend = backend or jax.default_backend()
  if name not in IMPLEMENTATIONS:
    raise ValueError(
      f"model.attention: unknown implementation {name!r} (known: {', '.join(IMPLEMENTATIONS)})"
    )
  if name == "auto":
    if backend == "gpu":
      return "cudnn" if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
    return "splash" if backend == "tpu" else "xla"
  if name in _NEEDS and backend != _NEEDS[name]:
    raise ValueError(
      f"model.attention: {name!r} runs on {_NEEDS[name]} only, this host's backend is {backend}"
    )
  return name


def segment_causal_mask(segment_ids_BxT):
  """BxTxT: causal within a document only; a token never sees another packed document."""
  T = segment_ids_BxT.shape[-1]
  same_BxTxS = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
  return same_BxTxS & jnp.tril(jnp.ones((T, T), bool))


def attend(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT, implementation: str):
  """Self-attention of a packed row (S == T), softmax(q k^T / sqrt(K)) v, BxTxHxK."""
  impl = resolve(implementation, q_BxTxHxK.dtype)
  if impl == "reference":
    return masked(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_causal_mask(segment_ids_BxT))
  if impl == "splash":
    if q_BxTxHxK.shape[1] % SPLASH_BLOCK == 0:
      return _splash(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT)
    impl = "xla"  # rows the kernel cannot tile (scoring, attacks): the same function
  mask_Bx1xTxS = segment_causal_mask(segment_ids_BxT)[:, None]
  return jax.nn.dot_product_attention(
    q_BxTxHxK,
    k_BxSxGxK,
    v_BxSxGxK,
    mask=mask_Bx1xTxS,
    is_causal=impl == "cudnn",
    implementation=impl,
  )


def masked(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, mask_BxTxS):
  """The reference math: float32 logits, masked, softmaxed, back in the input dtype."""
  dt, K = q_BxTxHxK.dtype, q_BxTxHxK.shape[-1]
  R = q_BxTxHxK.shape[2] // k_BxSxGxK.shape[2]
  # KV heads repeated to the query heads: 4-D einsums run ~30% faster than
  # grouped 5-D ones on XLA:CPU, and K, V are the small tensors.
  k_BxSxHxK = jnp.repeat(k_BxSxGxK, R, axis=2)
  v_BxSxHxK = jnp.repeat(v_BxSxGxK, R, axis=2)
  logits_BxHxTxS = (
    jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK, preferred_element_type=jnp.float32)
    * K**-0.5
  )
  logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
  probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(dt)
  return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


class LayerCache(NamedTuple):
  """One layer's keys and values (after rotary) in a fixed buffer of L slots."""

  k_BxLxGxK: jax.Array
  v_BxLxGxK: jax.Array


def cached(q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, cache: LayerCache, index, segment_ids_BxL):
  """Writes T new keys/values at slots [index, index + T) and attends over the buffer.

  Query t sits at slot index + t and sees slots s <= index + t whose segment id
  equals its own (a left-padded prompt's padding is segment 0). Returns the
  attention output BxTxHxK and the updated cache.
  """
  start = (0, index, 0, 0)
  cache = LayerCache(
    jax.lax.dynamic_update_slice(cache.k_BxLxGxK, k_BxTxGxK, start),
    jax.lax.dynamic_update_slice(cache.v_BxLxGxK, v_BxTxGxK, start),
  )
  T, L = q_BxTxHxK.shape[1], segment_ids_BxL.shape[1]
  slot_T = index + jnp.arange(T)
  q_seg_BxT = jax.lax.dynamic_slice_in_dim(segment_ids_BxL, index, T, axis=1)
  mask_BxTxL = (q_seg_BxT[:, :, None] == segment_ids_BxL[:, None, :]) & (
    jnp.arange(L)[None, None, :] <= slot_T[None, :, None]
  )
  return masked(q_BxTxHxK, cache.k_BxLxGxK, cache.v_BxLxGxK, mask_BxTxL), cache


def _splash(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT):
  """Splash attention, per row (vmap) and, under a mesh, per device shard (shard_map)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return _splash_local(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT)
  spec = lambda x, names: logical_to_spec(names, x.shape, mesh)
  q_spec = spec(q_BxTxHxK, ("batch", "length", "heads", "head_dim"))
  kv_spec = spec(k_BxSxGxK, ("batch", "length", "kv_heads", "head_dim"))
  if (q_spec[2] is None) != (kv_spec[2] is None):  # each shard must keep whole KV groups
    q_spec = kv_spec = jax.sharding.PartitionSpec(q_spec[0])
  seg_spec = jax.sharding.PartitionSpec(q_spec[0])
  return jax.shard_map(
    _splash_local,
    mesh=mesh,
    in_specs=(q_spec, kv_spec, kv_spec, seg_spec),
    out_specs=q_spec,
    check_vma=False,
  )(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT)


def _splash_local(q_BxTxHxK, k_BxSxGxK, v_BxSxGxK, segment_ids_BxT, interpret: bool = False):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash

  T, H, K = q_BxTxHxK.shape[1:]
  kernel = _splash_kernel(T, H, interpret)
  q_BxHxTxK = jnp.swapaxes(q_BxTxHxK * jnp.asarray(K**-0.5, q_BxTxHxK.dtype), 1, 2)
  k_BxGxSxK, v_BxGxSxK = jnp.swapaxes(k_BxSxGxK, 1, 2), jnp.swapaxes(v_BxSxGxK, 1, 2)
  run = lambda q, k, v, seg: kernel(q, k, v, segment_ids=splash.SegmentIds(seg, seg))
  out_BxHxTxK = jax.vmap(run)(q_BxHxTxK, k_BxGxSxK, v_BxGxSxK, segment_ids_BxT)
  return jnp.swapaxes(out_BxHxTxK, 1, 2)


@functools.cache
def _splash_kernel(T: int, H: int, interpret: bool):
  """A causal splash kernel for H heads of length T (blocks of up to 512, dividing T)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as splash

  block = int(np.gcd(T, 512))
  sizes = splash.BlockSizes(
    block_q=block,
    block_kv=block,
    block_kv_compute=block,
    block_q_dkv=block,
    block_kv_dkv=block,
    block_kv_dkv_compute=block,
    block_q_dq=block,
    block_kv_dq=block,
  )
  mask = splash.MultiHeadMask([splash.CausalMask((T, T))] * H)
  return splash.make_splash_mha(
    mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret
  )
