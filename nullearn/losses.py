"""Token-level negative log-likelihood, shared by training, evaluation and unlearning."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
  """-log p(target) per token, float32, BxT."""
  logits = logits_BxTxV.astype(jnp.float32)
  logz_BxT = jax.nn.logsumexp(logits, axis=-1)
  picked_BxT = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  return logz_BxT - picked_BxT


def mean_nll(logits_BxTxV, targets_BxT, weights_BxT) -> tuple[jax.Array, jax.Array]:
  """Weighted mean NLL over the batch and the weight total (the token count)."""
  nll_BxT = token_nll(logits_BxTxV, targets_BxT)
  total = jnp.sum(weights_BxT)
  return jnp.sum(nll_BxT * weights_BxT) / jnp.maximum(total, 1.0), total


def sequence_nll(logits_BxTxV, targets_BxT, weights_BxT) -> jax.Array:
  """Summed NLL per sequence, B: the unit of the post-hoc unlearning losses."""
  return jnp.sum(token_nll(logits_BxTxV, targets_BxT) * weights_BxT, axis=-1)
