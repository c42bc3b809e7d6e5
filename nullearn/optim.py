"""AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate(train_cfg: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
  warmup = min(train_cfg.warmup_steps, max(steps // 10, 1))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=train_cfg.lr,
    warmup_steps=warmup,
    decay_steps=max(steps, warmup + 1),
    end_value=train_cfg.lr * train_cfg.end_lr_ratio,
  )


def optimizer(
  train_cfg: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """Norm scales (1-D) are not decayed: decaying them only fights the normalisation."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(
    optax.clip_by_global_norm(train_cfg.grad_clip),
    optax.adamw(
      schedule,
      b1=train_cfg.b1,
      b2=train_cfg.b2,
      eps=train_cfg.eps,
      weight_decay=train_cfg.weight_decay,
      mask=decay_mask,
    ),
  )
