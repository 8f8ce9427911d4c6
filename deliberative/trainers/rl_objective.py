"""The RL objective and its two compiled steps: scoring a rollout, and the PPO update.

A rollout row is one prompt (left-padded to P slots) followed by its sampled completion
(T slots): `tokens_BL` with L = P + T. The logits at slot P-1+t predict completion token
t, so completion log-probs are `logits_BLV[:, P-1:L-1]` gathered at `completion_BT`. A packed
row (rl_rollout.pack_rows) holds several rollouts and T = L - 1: every slot's target, with
`mask_BT` on the completion tokens; the same slicing serves both.
Every quantity is averaged over completion tokens (`mask_BT`); prompt and padding slots
get weight zero, hence zero gradient.

Log-probs are taken under softmax(logits / temperature), exactly as the sampler scores
the tokens it draws, so `logp_old` (the sampler's) and the trainer's agree before any
update (`rl/logp_mismatch`, ~1e-6 in float32; a large value is a bug).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from deliberative.model import losses, sharding
from deliberative.trainers import state as state_lib

# Fields of a rollout batch as it goes to the device (all [rows, ...], sharded over rows).
ROLLOUT_FIELDS = ('tokens_BL', 'positions_BL', 'segment_ids_BL', 'completion_BT', 'mask_BT', 'logp_old_BT')
UPDATE_FIELDS = ROLLOUT_FIELDS + ('logp_ref_BT', 'advantages_BT')

# |log ratio| beyond this is clamped before exp(): one token whose probability moved by
# e^20 is already a broken update, and an inf would poison the whole minibatch.
_MAX_LOG_RATIO = 20.0


@dataclasses.dataclass(frozen=True)
class Objective:
  temperature: float
  clip_eps: float
  kl_coef: float


def completion_logp(model, batch, temperature: float, frozen_layers: int = 0):
  """(logp_BT, entropy_BT) of the completion tokens under softmax(logits / temperature); the
  logits are taken model.cfg.loss_chunk positions at a time (model/losses.py)."""
  x_BLE, _ = model.hidden(batch['tokens_BL'], batch['positions_BL'], batch['segment_ids_BL'],
                          frozen_layers=frozen_layers)
  T = batch['completion_BT'].shape[1]
  L = x_BLE.shape[1]
  return losses.token_logp(model, x_BLE[:, L - T - 1:L - 1], batch['completion_BT'], temperature)


def k3_kl(logp_BT, logp_ref_BT):
  """Per-token KL(policy || reference) estimate exp(d) - d - 1, d = logp_ref - logp (Schulman's k3):
  unbiased for samples drawn from the policy, and never negative."""
  d_BT = jnp.clip(logp_ref_BT - logp_BT, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
  return jnp.exp(d_BT) - d_BT - 1.0


def ppo_terms(logp_BT, batch, obj: Objective):
  """(loss, sums): the clipped surrogate + kl_coef * KL, averaged over completion tokens."""
  mask_BT = batch['mask_BT']
  log_ratio_BT = jnp.clip(logp_BT - batch['logp_old_BT'], -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
  ratio_BT = jnp.exp(log_ratio_BT)
  adv_BT = batch['advantages_BT']  # per token: a packed row holds several rollouts
  unclipped_BT = ratio_BT * adv_BT
  clipped_BT = jnp.clip(ratio_BT, 1.0 - obj.clip_eps, 1.0 + obj.clip_eps) * adv_BT
  pg_BT = -jnp.minimum(unclipped_BT, clipped_BT)
  kl_BT = k3_kl(logp_BT, batch['logp_ref_BT'])
  tokens = jnp.sum(mask_BT)
  denom = jnp.maximum(tokens, 1.0)
  loss = jnp.sum((pg_BT + obj.kl_coef * kl_BT) * mask_BT) / denom
  sums = {'pg': jnp.sum(pg_BT * mask_BT), 'kl': jnp.sum(kl_BT * mask_BT),
          'clipped': jnp.sum((jnp.abs(ratio_BT - 1.0) > obj.clip_eps) * mask_BT), 'tokens': tokens}
  return loss, sums


def minibatch_loss(model, batch, obj: Objective, frozen_layers: int = 0):
  """The per-minibatch loss of the policy `model`."""
  logp_BT, _ = completion_logp(model, batch, obj.temperature, frozen_layers)
  return ppo_terms(logp_BT, batch, obj)


def loss_from_logits(logits_BLV, batch, obj: Objective):
  """minibatch_loss as a function of full-sequence logits (what the tests probe by hand)."""
  T = batch['completion_BT'].shape[1]
  L = logits_BLV.shape[1]
  logp_BT, _ = losses.logp_and_entropy(logits_BLV[:, L - T - 1:L - 1], batch['completion_BT'], obj.temperature)
  return ppo_terms(logp_BT, batch, obj)


def _row_sharding(setup: state_lib.Setup, ndim: int, leading: int = 0) -> NamedSharding:
  """Rows sharded like a batch, after `leading` unsharded axes; trailing axes replicated."""
  rows = setup.batch_sharding().spec[0]
  return NamedSharding(setup.mesh, P(*([None] * leading), rows, *([None] * (ndim - 1))))


def field_shardings(setup: state_lib.Setup, fields) -> dict:
  return {k: _row_sharding(setup, 1 if k.endswith('_B') else 2) for k in fields}


def _split_minibatches(setup: state_lib.Setup, batch, n_minibatches: int):
  """[R, ...] -> [n, R/n, ...], the row axis still sharded over the batch mesh axes."""
  def split(x):
    y = x.reshape((n_minibatches, x.shape[0] // n_minibatches) + x.shape[1:])
    return jax.lax.with_sharding_constraint(y, _row_sharding(setup, x.ndim, leading=1))
  return jax.tree.map(split, batch)


def make_score_step(setup: state_lib.Setup, obj: Objective, n_minibatches: int):
  """(params, ref_params, rollout) -> (logp_ref_BT, metrics), before any update.

  Runs minibatch by minibatch (lax.map) so that peak memory is one minibatch's logits.
  """
  def score(params, ref_params, batch):
    def one(mb):
      logp_BT, entropy_BT = completion_logp(setup.bind(params), mb, obj.temperature)
      logp_ref_BT, _ = completion_logp(setup.bind(ref_params), mb, obj.temperature)
      return logp_BT, entropy_BT, logp_ref_BT
    split = _split_minibatches(setup, {k: batch[k] for k in ROLLOUT_FIELDS}, n_minibatches)
    logp_NMT, entropy_NMT, logp_ref_NMT = jax.lax.map(one, split)
    R = batch['tokens_BL'].shape[0]
    logp_BT, entropy_BT, logp_ref_BT = (x.reshape((R,) + x.shape[2:]) for x in (logp_NMT, entropy_NMT, logp_ref_NMT))
    mask_BT = batch['mask_BT']
    denom = jnp.maximum(jnp.sum(mask_BT), 1.0)
    gap_BT = jnp.abs(batch['logp_old_BT'] - logp_BT) * mask_BT
    metrics = {'rl/logp_mismatch': jnp.sum(gap_BT) / denom, 'rl/logp_mismatch_max': jnp.max(gap_BT),
               'rl/entropy': jnp.sum(entropy_BT * mask_BT) / denom,
               'rl/kl': jnp.sum(k3_kl(logp_BT, logp_ref_BT) * mask_BT) / denom}
    return logp_ref_BT, metrics

  params_sharding = setup.state_shardings['params']
  return jax.jit(sharding.under_mesh(score, setup.mesh, setup.rules),
                 in_shardings=(params_sharding, params_sharding, field_shardings(setup, ROLLOUT_FIELDS)),
                 out_shardings=(_row_sharding(setup, 2), setup.replicated()))


def make_update_step(setup: state_lib.Setup, obj: Objective, ppo_epochs: int, n_minibatches: int,
                     presplit: bool = False):
  """(state, rollout + logp_ref + advantages) -> (state, metrics): `ppo_epochs` shuffled passes,
  one optimizer update per minibatch. The row shuffle draws from state['rng'] (checkpointed).
  `presplit`: the rows already come minibatch by minibatch (a packed rollout, rl_rollout.pack_rows):
  each epoch shuffles the order of the minibatches, never rows across them."""
  def update(state, batch):
    key = jax.random.wrap_key_data(state['rng'])
    key, *epoch_keys = jax.random.split(key, ppo_epochs + 1)
    R = batch['tokens_BL'].shape[0]
    grad_fn = jax.value_and_grad(
        lambda p, mb: minibatch_loss(setup.bind(p), mb, obj, setup.frozen_layers), has_aux=True)

    def minibatch(carry, mb):
      params, opt_state = carry
      (loss, sums), grads = grad_fn(params, mb)
      updates, opt_state = setup.tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), {
          'loss': loss, 'grad_norm': optax.global_norm(grads), **sums}

    def epoch(carry, epoch_key):
      if presplit:
        order = jax.random.permutation(epoch_key, n_minibatches)
        shuffled = jax.tree.map(lambda x: x[order], _split_minibatches(setup, batch, n_minibatches))
      else:
        order = jax.random.permutation(epoch_key, R)
        shuffled = _split_minibatches(setup, jax.tree.map(lambda x: x[order], batch), n_minibatches)
      return jax.lax.scan(minibatch, carry, shuffled)

    (params, opt_state), per_update = jax.lax.scan(epoch, (state['params'], state['opt_state']),
                                                   jnp.stack(epoch_keys))
    tokens = jnp.maximum(jnp.sum(per_update['tokens']), 1.0)
    metrics = {'train/loss': jnp.mean(per_update['loss']), 'train/grad_norm': jnp.mean(per_update['grad_norm']),
               'rl/pg_loss': jnp.sum(per_update['pg']) / tokens,
               'rl/kl_during_update': jnp.sum(per_update['kl']) / tokens,
               'rl/clip_fraction': jnp.sum(per_update['clipped']) / tokens,
               'train/lr': setup.lr(state['step'] * ppo_epochs * n_minibatches)}
    new_state = {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1,
                 'rng': jax.random.key_data(key)}
    return new_state, metrics

  return jax.jit(sharding.under_mesh(update, setup.mesh, setup.rules),
                 in_shardings=(setup.state_shardings, field_shardings(setup, UPDATE_FIELDS)),
                 out_shardings=(setup.state_shardings, setup.replicated()), donate_argnums=0)
