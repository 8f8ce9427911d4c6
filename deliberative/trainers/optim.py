"""Optimizer and schedule from the `optim` config section."""

from __future__ import annotations

import jax
import optax


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `total_steps`."""
  warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


def make(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  lr = schedule(optim_cfg, total_steps)
  parts = []
  if optim_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  # Decay matrices only: norm scales and biases are left alone (the usual LLM recipe).
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts.append(optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                           weight_decay=optim_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts), lr
