"""The NULL transformer: a decoder-only transformer whose MLP has per-source sinks.

The only change to a standard transformer is one line in `SinkMLP`: hidden
activations are multiplied by the token's mask before the down-projection. With
``pool=0`` the same code is the plain transformer baseline.

Shape suffixes (one meaning each, across the project):
  B batch          T query length      S key/value length   D d_model
  H query heads    G KV heads          K head dim           F MLP width (backbone + pool)
  P sink pool      A active sinks per source                 M documents per packed row
  N gathered sink columns (M * A)      V vocabulary         L a fixed buffer length
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from nullearn import attention
from nullearn.attention import LayerCache
from nullearn.masks import SinkGeometry
from nullearn.sharding import constrain
from nullearn.switch import GatheredSinks, Switch

# What the backward pass keeps of a block's forward pass (jax.checkpoint policies);
# "none" keeps everything (no rematerialisation), "full" only the block's inputs.
REMAT_POLICIES: dict[str, Callable | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 1024
  d_model: int = 96
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 24
  backbone: int = 32
  pool: int = 1024
  active: int = 32
  mask_seed: int = 0
  per_layer_masks: bool = False
  rope_base: float = 10_000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  init_std: float = 0.02
  # Rematerialisation of each block in the backward pass: a key of REMAT_POLICIES
  # (a bool, as older configs have it, means "full" or "none").
  remat: str = "none"
  # One block's parameters stacked over layers and the blocks run by `nnx.scan`:
  # compile time independent of depth. Unrolled ("blocks" a list) otherwise.
  scan_layers: bool = False
  # "dense" multiplies the full MLP width by the mask (the reference computation);
  # "gather" computes only the backbone and each packed document's own sinks,
  # for rows of at most `max_segments` documents (training batches).
  sink_impl: str = "dense"
  max_segments: int = 4
  # Segment-causal attention kernel: "auto", "reference", "xla", "cudnn" or "splash"
  # (nullearn/attention.py); every one computes the same function.
  attention: str = "auto"

  def __post_init__(self):
    if isinstance(self.remat, bool):
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
      )
    _ = self.geometry  # validates the sink geometry
    if self.sink_impl not in ("dense", "gather"):
      raise ValueError(f"sink_impl must be 'dense' or 'gather', got {self.sink_impl!r}")
    if self.head_dim % 2:
      raise ValueError(f"rotary embeddings need an even head_dim, got {self.head_dim}")
    if self.attention not in attention.IMPLEMENTATIONS:
      raise ValueError(
        f"attention must be one of {attention.IMPLEMENTATIONS}, got {self.attention!r}"
      )

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict | dict) -> ModelConfig:
    d = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown model config keys: {sorted(unknown)}")
    return cls(**d)

  @property
  def mlp_dim(self) -> int:
    return self.backbone + self.pool

  @property
  def geometry(self) -> SinkGeometry:
    """What fixes every source's mask; a checkpoint refuses a different one."""
    return SinkGeometry(self.backbone, self.pool, self.active, self.mask_seed, self.per_layer_masks)


def _param(rngs: nnx.Rngs, shape, names, std, dtype) -> nnx.Param:
  value = jax.random.normal(rngs.params(), shape, dtype) * std
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


class RMSNorm(nnx.Module):
  def __init__(self, cfg: ModelConfig):
    self.eps = cfg.norm_eps
    self.scale = nnx.Param(
      jnp.ones((cfg.d_model,), cfg.param_dtype), out_sharding=("embed",), eager_sharding=False
    )

  def __call__(self, x_BxTxD):
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...]).astype(x_BxTxD.dtype)


def project(x, w, out_dims: int = 1, out_dtype=None):
  """x[..., D] @ w[D, *O] as one 2-D matmul (accumulating into `out_dtype`).

  XLA:CPU differentiates 3-D dots that contract batch and time ~2.4x slower
  than the same product on rows; on TPU and GPU the reshapes are free.
  """
  in_dims = w.ndim - out_dims
  lead, contract = x.shape[: x.ndim - in_dims], x.shape[x.ndim - in_dims :]
  out = jnp.matmul(
    x.reshape(-1, int(np.prod(contract))),
    w.reshape(-1, int(np.prod(w.shape[in_dims:]))),
    preferred_element_type=out_dtype,
  )
  return out.reshape(*lead, *w.shape[in_dims:])


def rope(x_BxTxHxK, positions_BxT, base: float):
  half = x_BxTxHxK.shape[-1] // 2
  freq_K = base ** (-np.arange(half, dtype=np.float32) / half)
  angle_BxTx1xK = (positions_BxT[..., None].astype(jnp.float32) * freq_K)[:, :, None, :]
  sin, cos = jnp.sin(angle_BxTx1xK), jnp.cos(angle_BxTx1xK)
  x1, x2 = jnp.split(x_BxTxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxK.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with rotary embeddings."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    D, H, G, K = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    std, pd = cfg.init_std, cfg.param_dtype
    self.wq = _param(rngs, (D, H, K), ("embed", "heads", "head_dim"), std, pd)
    self.wk = _param(rngs, (D, G, K), ("embed", "kv_heads", "head_dim"), std, pd)
    self.wv = _param(rngs, (D, G, K), ("embed", "kv_heads", "head_dim"), std, pd)
    self.wo = _param(
      rngs, (H, K, D), ("heads", "head_dim", "embed"), std / np.sqrt(2 * cfg.num_layers), pd
    )

  def __call__(
    self, x_BxTxD, segment_ids_BxS, positions_BxT, cache: LayerCache | None = None, index=None
  ):
    """Attention output BxTxD; with `cache`, (output, updated cache).

    `segment_ids_BxS` are the keys': the row's own tokens, or with `cache` the
    buffer's L slots, the T new tokens written at slots [index, index + T).
    """
    cfg = self.cfg
    dt = x_BxTxD.dtype
    q_BxTxHxK = project(x_BxTxD, self.wq[...].astype(dt), 2)
    k_BxTxGxK = project(x_BxTxD, self.wk[...].astype(dt), 2)
    v_BxTxGxK = project(x_BxTxD, self.wv[...].astype(dt), 2)
    q_BxTxHxK = constrain(
      rope(q_BxTxHxK, positions_BxT, cfg.rope_base), ("batch", "length", "heads", "head_dim")
    )
    k_BxTxGxK = rope(k_BxTxGxK, positions_BxT, cfg.rope_base)
    if cache is None:
      out_BxTxHxK = attention.attend(
        q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, segment_ids_BxS, cfg.attention
      )
      return project(out_BxTxHxK, self.wo[...].astype(dt))
    # --- decoding hook: the new keys and values join the cache (nullearn/sampler.py) ---
    out_BxTxHxK, cache = attention.cached(
      q_BxTxHxK, k_BxTxGxK, v_BxTxGxK, cache, index, segment_ids_BxS
    )
    return project(out_BxTxHxK, self.wo[...].astype(dt)), cache


class SinkMLP(nnx.Module):
  """SwiGLU MLP over `backbone` always-on neurons followed by a `pool` of sinks."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    D, F = cfg.d_model, cfg.mlp_dim
    std, pd = cfg.init_std, cfg.param_dtype
    self.backbone = cfg.backbone
    self.w_gate = _param(rngs, (D, F), ("embed", "mlp"), std, pd)
    self.w_up = _param(rngs, (D, F), ("embed", "mlp"), std, pd)
    self.w_down = _param(rngs, (F, D), ("mlp", "embed"), std / np.sqrt(2 * cfg.num_layers), pd)

  def __call__(self, x_BxTxD, mask_BxTxF):
    if isinstance(mask_BxTxF, GatheredSinks):
      return self._gathered(x_BxTxD, mask_BxTxF)
    dt = x_BxTxD.dtype
    gate_BxTxF = project(x_BxTxD, self.w_gate[...].astype(dt))
    up_BxTxF = project(x_BxTxD, self.w_up[...].astype(dt))
    h_BxTxF = constrain(jax.nn.silu(gate_BxTxF) * up_BxTxF, ("batch", "length", "mlp"))
    if mask_BxTxF is not None:
      h_BxTxF = h_BxTxF * mask_BxTxF  # the NULL line: only this token's source's sinks fire
    return project(h_BxTxF, self.w_down[...].astype(dt))

  def _gathered(self, x_BxTxD, sinks: GatheredSinks):
    dt, nb = x_BxTxD.dtype, self.backbone
    w_gate, w_up, w_down = (w[...].astype(dt) for w in (self.w_gate, self.w_up, self.w_down))
    # Each row's own sink weights live with the row: sharded over the batch like
    # activations (the FSDP-sharded weights are gathered whole first).
    rows = lambda w_FxD: constrain(
      jnp.take(w_FxD, sinks.columns_BxN, axis=0), ("batch", None, None)
    )
    gate_BxNxD, up_BxNxD, down_BxNxD = rows(w_gate.T), rows(w_up.T), rows(w_down)
    h_BxTxN = (
      jax.nn.silu(jnp.einsum("btd,bnd->btn", x_BxTxD, gate_BxNxD))
      * jnp.einsum("btd,bnd->btn", x_BxTxD, up_BxNxD)
      * sinks.on_BxTxN
    )
    out_BxTxD = jnp.einsum("btn,bnd->btd", h_BxTxN, down_BxNxD)
    if nb:
      h_BxTxBb = jax.nn.silu(project(x_BxTxD, w_gate[:, :nb])) * project(x_BxTxD, w_up[:, :nb])
      out_BxTxD = out_BxTxD + project(h_BxTxBb, w_down[:nb])
    return out_BxTxD


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg)
    self.mlp = SinkMLP(cfg, rngs)

  def __call__(self, x_BxTxD, segment_ids_BxT, positions_BxT, mlp_mask_BxTxF):
    x_BxTxD = x_BxTxD + self.attn(self.attn_norm(x_BxTxD), segment_ids_BxT, positions_BxT)
    x_BxTxD = x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD), mlp_mask_BxTxF)
    return constrain(x_BxTxD, ("batch", "length", "embed"))

  def cached(
    self, x_BxTxD, segment_ids_BxL, positions_BxT, mlp_mask_BxTxF, cache: LayerCache, index
  ):
    """The block on T new tokens of a decoding buffer; (output, updated cache)."""
    attn_BxTxD, cache = self.attn(
      self.attn_norm(x_BxTxD), segment_ids_BxL, positions_BxT, cache, index
    )
    x_BxTxD = x_BxTxD + attn_BxTxD
    return x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD), mlp_mask_BxTxF), cache


class Transformer(nnx.Module):
  """Decoder-only NULL transformer; `switch` says which sinks are on."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = _param(
      rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.init_std, cfg.param_dtype
    )
    if cfg.scan_layers:
      self.blocks = _stacked_blocks(cfg, rngs)
    else:
      self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg)
    if not cfg.tie_embeddings:
      self.unembed = _param(
        rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.init_std, cfg.param_dtype
      )

  def mlp_masks(self, switch: Switch | None, segment_ids_BxT) -> Callable:
    """layer -> that layer's MLP mask. The layer may be traced (scanned blocks); whether
    sinks are gathered is decided here, on the rows as given."""
    cfg = self.cfg
    if cfg.pool == 0:
      return lambda layer: None
    if switch is None:
      raise ValueError("a model with sinks needs a Switch (e.g. Switch.sources(ids))")
    dtype = jnp.dtype(cfg.dtype)
    if (
      cfg.sink_impl == "gather"
      and switch.mode == "source"
      and _gatherable(segment_ids_BxT, cfg.max_segments)
    ):
      mask = lambda layer: switch.gathered(
        cfg.geometry, segment_ids_BxT, cfg.max_segments, dtype, layer
      )
    else:
      mask = lambda layer: switch.mlp_mask(cfg.geometry, dtype, layer)
    if cfg.per_layer_masks:
      return mask
    shared = mask(0)
    return lambda layer: shared

  def embed_tokens(self, tokens_BxT):
    x_BxTxD = jnp.take(self.embed[...], tokens_BxT, axis=0).astype(self.cfg.dtype)
    return constrain(x_BxTxD, ("batch", "length", "embed"))

  def hidden(self, tokens_BxT, segment_ids_BxT, positions_BxT, switch: Switch | None):
    """Final-normed hidden states, BxTxD (what source routing embeds)."""
    return self.hidden_from_embeddings(
      self.embed_tokens(tokens_BxT), segment_ids_BxT, positions_BxT, switch
    )

  def hidden_from_embeddings(self, x_BxTxD, segment_ids_BxT, positions_BxT, switch: Switch | None):
    """The trunk on given input embeddings (GCG differentiates through them)."""
    cfg = self.cfg
    masks = self.mlp_masks(switch, segment_ids_BxT)

    # A per-layer mask is derived inside the rematerialised layer: recomputed in the
    # backward pass rather than kept, B x T x F per layer, for it.
    def layer_fn(block: Block, x_BxTxD, layer):
      return block(x_BxTxD, segment_ids_BxT, positions_BxT, masks(layer))

    if cfg.remat != "none":
      layer_fn = nnx.remat(layer_fn, policy=REMAT_POLICIES[cfg.remat])
    if cfg.scan_layers:
      scan = nnx.scan(layer_fn, in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry)
      x_BxTxD = scan(self.blocks, x_BxTxD, jnp.arange(cfg.num_layers, dtype=jnp.uint32))
    else:
      for i, block in enumerate(self.blocks):
        x_BxTxD = layer_fn(block, x_BxTxD, jnp.uint32(i))
    return self.final_norm(x_BxTxD)

  # --- decoding path (nullearn/sampler.py): the layer loop with one KV cache per layer ---
  def hidden_cached(
    self, tokens_BxT, positions_BxT, switch: Switch | None, cache, index, segment_ids_BxL
  ):
    """Final-normed hidden states of T new tokens at buffer slots [index, index + T), BxTxD,
    and the caches with their keys and values written in (`sampler.init_cache`: one
    LayerCache per layer, or one stacked on a leading layer axis for scanned blocks)."""
    cfg = self.cfg
    segment_ids_BxT = jax.lax.dynamic_slice_in_dim(segment_ids_BxL, index, tokens_BxT.shape[1], 1)
    masks = self.mlp_masks(switch, segment_ids_BxT)

    def layer_fn(block: Block, x_BxTxD, layer_cache: LayerCache, layer):
      return block.cached(x_BxTxD, segment_ids_BxL, positions_BxT, masks(layer), layer_cache, index)

    x_BxTxD = self.embed_tokens(tokens_BxT)
    if cfg.scan_layers:
      scan = nnx.scan(layer_fn, in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
      x_BxTxD, cache = scan(
        self.blocks, x_BxTxD, cache, jnp.arange(cfg.num_layers, dtype=jnp.uint32)
      )
    else:
      new_cache = []
      for i, (block, layer_cache) in enumerate(zip(self.blocks, cache)):
        x_BxTxD, layer_cache = layer_fn(block, x_BxTxD, layer_cache, jnp.uint32(i))
        new_cache.append(layer_cache)
      cache = tuple(new_cache)
    return self.final_norm(x_BxTxD), cache

  def __call__(self, tokens_BxT, segment_ids_BxT, positions_BxT, switch: Switch | None):
    """Next-token logits, BxTxV in float32."""
    return self.logits(self.hidden(tokens_BxT, segment_ids_BxT, positions_BxT, switch))

  def logits(self, x_BxTxD):
    if self.cfg.tie_embeddings:
      w_DxV = self.embed[...].T
    else:
      w_DxV = self.unembed[...]
    logits_BxTxV = project(x_BxTxD, w_DxV.astype(x_BxTxD.dtype), out_dtype=jnp.float32)
    return constrain(logits_BxTxV, ("batch", "length", "vocab"))


def _gatherable(segment_ids_BxT, max_segments: int) -> bool:
  """Whether gathered sinks represent these rows exactly.

  Concrete rows are checked: a row of more than `max_segments` documents, or a
  row whose tokens are all in segment 0 (the padding id, which gets no sinks
  on the gathered path), is computed densely instead. Traced rows come from
  the training pipeline, which packs at most `max_segments` documents a row.
  """
  if isinstance(segment_ids_BxT, jax.core.Tracer):
    return True
  seg_BxT = np.asarray(segment_ids_BxT)
  return bool(seg_BxT.max() <= max_segments and np.all(seg_BxT.max(axis=-1) > 0))


def _stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
  """One Block whose parameters have a leading layer axis (logical name "layers")."""

  @nnx.split_rngs(splits=cfg.num_layers)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def make(rngs: nnx.Rngs) -> Block:
    return Block(cfg, rngs)

  return make(rngs)


def is_stacked(params) -> bool:
  """Whether pure params hold the scanned layout (one stacked block, not one per layer)."""
  return "attn" in params["blocks"]


def unstack_layers(params) -> dict:
  """Pure params with `blocks` as {layer: block} whichever layout they hold (slices of the
  stacked arrays, for code that walks the layers: surgery, export)."""
  blocks = params["blocks"]
  if not is_stacked(params):
    return params
  num_layers = jax.tree.leaves(blocks)[0].shape[0]
  return dict(
    params, blocks={i: jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(num_layers)}
  )


def stack_layers(params) -> dict:
  """The inverse of `unstack_layers`: per-layer blocks stacked on a leading axis."""
  if is_stacked(params):
    return params
  blocks = [params["blocks"][i] for i in sorted(params["blocks"])]
  return dict(params, blocks=jax.tree.map(lambda *xs: jnp.stack(xs), *blocks))


def to_layout(params, scan_layers: bool) -> dict:
  """Pure params in the layout of a model with `scan_layers`."""
  return stack_layers(params) if scan_layers else unstack_layers(params)


def make_plain(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The NULL's baseline in place: the same MLP width with every neuron always on (pool 0)."""
  model.backbone, model.pool = model.backbone + model.pool, 0
  return model


def abstract(cfg: ModelConfig):
  """graphdef, abstract params (pure dict) and their logical axis names; allocates nothing."""
  model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  logical = jax.tree.map(
    lambda v: jax.sharding.PartitionSpec(*v.get_metadata()["out_sharding"]),
    state,
    is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  return graphdef, nnx.to_pure_dict(state), nnx.to_pure_dict(logical)


def param_count(cfg: ModelConfig) -> int:
  _, params, _ = abstract(cfg)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
