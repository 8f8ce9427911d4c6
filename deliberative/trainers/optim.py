"""Optimizer and schedule from the `optim` config section."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `total_steps`."""
  warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


def scale_new_token_rows(rows: tuple[int, int], scale: float) -> optax.GradientTransformation:
  """Multiplies the updates of vocabulary rows [lo, hi) (`embed` rows, `lm_head` columns) by `scale`.

  Rows a run added to a pretrained vocabulary (`<think>`/`</think>`) start as the mean token and
  must learn in a few hundred steps what the other rows learnt in pretraining; Adam moves every
  coordinate by ~lr a step, so at a fine-tuning lr of 1e-4 a new output row cannot catch up
  (measured on SmolLM2: after 100 SFT steps `</think>` still had log-prob -8.5 where it belonged,
  and the model ended its turn instead). Applied after Adam, so it is a per-row learning rate.
  """
  lo, hi = rows

  def update(updates, state, params=None):
    del params
    updates = dict(updates)
    if 'embed' in updates:
      updates['embed'] = updates['embed'].at[lo:hi].multiply(scale)
    if 'lm_head' in updates:
      updates['lm_head'] = updates['lm_head'].at[:, lo:hi].multiply(scale)
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def frozen_layers(optim_cfg, n_layers: int) -> int:
  """How many bottom blocks `optim.train_layers` (0 = all; N = the top N blocks, the final norm and
  the head) leaves untrained."""
  train = int(optim_cfg.get('train_layers', 0))
  if not 0 <= train <= n_layers:
    raise ValueError(f'config.optim.train_layers={train}: the model has {n_layers} blocks; '
                     f'choose 1..{n_layers}, or 0 to train them all')
  return n_layers - train if train else 0


def freeze_bottom_layers(frozen: int, tied_embeddings: bool) -> optax.GradientTransformation:
  """Zeroes the updates of the bottom `frozen` blocks and, when the head is separate, of the embedding.

  model.hidden stops their gradients, but AdamW would still move them by its weight decay: applied
  last, this keeps them bit-identical to the initial weights. Blocks are either stacked on a leading
  layers axis (scan_layers) or a dict keyed by layer index."""

  def update(updates, state, params=None):
    del params
    updates = dict(updates)
    blocks = updates['blocks']
    if all(isinstance(k, int) for k in blocks):
      updates['blocks'] = {i: jax.tree.map(jnp.zeros_like, b) if i < frozen else b for i, b in blocks.items()}
    else:
      updates['blocks'] = jax.tree.map(lambda u: u.at[:frozen].set(0), blocks)
    if not tied_embeddings:  # a tied table is also the head, which trains
      updates['embed'] = jnp.zeros_like(updates['embed'])
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(optim_cfg, total_steps: int, new_token_rows: tuple[int, int] | None = None, *, frozen_layers: int = 0,
         tied_embeddings: bool = False) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`new_token_rows`: the vocabulary rows this run added to its initial model, whose updates
  `optim.new_token_lr_scale` (default 1) multiplies. `frozen_layers`: bottom blocks left as they are
  (see frozen_layers())."""
  lr = schedule(optim_cfg, total_steps)
  parts = []
  if optim_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  # Decay matrices only: norm scales and biases are left alone (the usual LLM recipe).
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts.append(optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                           weight_decay=optim_cfg.weight_decay, mask=decay_mask))
  scale = float(optim_cfg.get('new_token_lr_scale', 1.0))
  if new_token_rows and new_token_rows[1] > new_token_rows[0] and scale != 1.0:
    parts.append(scale_new_token_rows(new_token_rows, scale))
  if frozen_layers:
    parts.append(freeze_bottom_layers(frozen_layers, tied_embeddings))
  return optax.chain(*parts), lr
