"""Token losses from final hidden states, the vocabulary's logits taken a chunk at a time.

    x_BLE, _ = model.hidden(tokens, positions, segment_ids)
    nll_sum, correct_sum = token_nll(model, x_BLE, targets_BL, weights_BL)
    logp_BT = token_logp(model, x_BTE, targets_BT, temperature)

With `model.cfg.loss_chunk = C > 0` the sequence is cut into pieces of C positions; each
piece's [B, C, V] float32 logits are made, reduced and dropped, and the backward pass makes
them again (jax.checkpoint) instead of keeping them. Peak memory holds one piece's logits, not
[B, L, V]: for Llama-3's 128,256-entry vocabulary at 4,096 positions that is 2 GiB per row
otherwise. C = 0 (the default on CPU) takes the whole sequence at once, the plain path. Both
paths give the same loss and gradients up to float rounding (tests/test_losses.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from deliberative.model import sharding


def _chunks(x, chunk: int, fill=0):
  """[B, L, ...] -> [n, B, C, ...], L padded with `fill` up to a multiple of C."""
  B, L = x.shape[:2]
  n = -(-L // chunk)
  pad = n * chunk - L
  if pad:
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
  return jnp.moveaxis(x.reshape((B, n, chunk) + x.shape[2:]), 1, 0)


def _piece_logits(head_EV, x_BCE):
  logits_BCV = jnp.einsum('bce,ev->bcv', x_BCE, head_EV, preferred_element_type=jnp.float32)
  return sharding.constrain(logits_BCV, ('batch', 'length', 'vocab'))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gather_targets(x_BTV, targets_BT, vocab: int):
  return jnp.take_along_axis(x_BTV, targets_BT[..., None], axis=-1)[..., 0]


def _gather_targets_fwd(x_BTV, targets_BT, vocab: int):
  return _gather_targets(x_BTV, targets_BT, vocab), (targets_BT, jnp.zeros((), x_BTV.dtype))


def _gather_targets_bwd(vocab: int, residuals, g_BT):
  targets_BT, zero = residuals
  is_target_BTV = jnp.arange(vocab, dtype=targets_BT.dtype) == targets_BT[..., None]
  return jnp.where(is_target_BTV, g_BT[..., None].astype(zero.dtype), zero), None


_gather_targets.defvjp(_gather_targets_fwd, _gather_targets_bwd)


def _at_targets(x_BTV, targets_BT):
  """x[b, t, targets[b, t]]: a gather forward (no [B, T, V] temporary: a masked sum cost the
  TPU score step 3.9 GiB per chip at Llama-3.2-1B's vocabulary), and a one-hot select backward
  (autodiff's gradient, a scatter into a [B, T, V] buffer, was transposed twice by XLA:CPU; the
  select fuses into the softmax gradient)."""
  return _gather_targets(x_BTV, targets_BT, x_BTV.shape[-1])


def _nll_and_correct(logits_BCV, targets_BC):
  lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
  return lse_BC - _at_targets(logits_BCV, targets_BC), jnp.argmax(logits_BCV, axis=-1) == targets_BC


def logp_and_entropy(logits_BTV, targets_BT, temperature: float = 1.0):
  """(log p(target), entropy) per position under softmax(logits / temperature)."""
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32) / temperature, axis=-1)
  return _at_targets(logp_BTV, targets_BT), -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)


def token_nll(model, x_BLE, targets_BL, weights_BL) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted NLL, sum of weights where the argmax is the target) over [B, L]."""
  chunk = model.cfg.loss_chunk
  head_EV = model.head()
  if not chunk or chunk >= x_BLE.shape[1]:
    nll_BL, correct_BL = _nll_and_correct(model.logits(x_BLE), targets_BL)
    return jnp.sum(nll_BL * weights_BL), jnp.sum(correct_BL * weights_BL)

  @jax.checkpoint
  def piece(head_EV, x_BCE, targets_BC, weights_BC):
    nll_BC, correct_BC = _nll_and_correct(_piece_logits(head_EV, x_BCE), targets_BC)
    return jnp.sum(nll_BC * weights_BC), jnp.sum(correct_BC * weights_BC)

  def body(carry, xs):
    nll, correct = piece(head_EV, *xs)
    return (carry[0] + nll, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  xs = (_chunks(x_BLE, chunk), _chunks(targets_BL, chunk), _chunks(weights_BL.astype(jnp.float32), chunk))
  (nll, correct), _ = jax.lax.scan(body, (zero, zero), xs)
  return nll, correct


def token_logp(model, x_BTE, targets_BT, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """(log p(target), entropy) per position under softmax(logits / temperature), [B, T] each,
  the logits taken `model.cfg.loss_chunk` positions at a time."""
  chunk = model.cfg.loss_chunk
  head_EV = model.head()
  if not chunk or chunk >= x_BTE.shape[1]:
    return logp_and_entropy(model.logits(x_BTE), targets_BT, temperature)

  @jax.checkpoint
  def piece(head_EV, x_BCE, targets_BC):
    return logp_and_entropy(_piece_logits(head_EV, x_BCE), targets_BC, temperature)

  T = x_BTE.shape[1]
  logp_nBC, entropy_nBC = jax.lax.map(lambda xs: piece(head_EV, *xs), (_chunks(x_BTE, chunk), _chunks(targets_BT, chunk)))
  unchunk = lambda a: jnp.moveaxis(a, 0, 1).reshape(a.shape[1], -1)[:, :T]
  return unchunk(logp_nBC), unchunk(entropy_nBC)
