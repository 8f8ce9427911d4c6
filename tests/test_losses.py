"""Chunked token losses equal the plain ones (loss and gradients), and the dot_product
attention switch equals the einsum reference (training, packing, padding, KV cache)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deliberative.model import losses
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import build, init_cache

CFG = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, tie_embeddings=True)


def _batch(B=3, L=13, seed=0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(0, CFG.vocab_size, (B, L)), jnp.int32)
  targets = jnp.asarray(rng.integers(0, CFG.vocab_size, (B, L)), jnp.int32)
  weights = jnp.asarray(rng.random((B, L)) > 0.3, jnp.float32)
  # Two packed segments and trailing padding in the last row.
  segments = np.ones((B, L), np.int32)
  segments[-1, 6:] = 2
  segments[-1, -2:] = 0
  positions = np.tile(np.arange(L), (B, 1))
  positions[-1, 6:] -= 6
  return tokens, targets, weights, jnp.asarray(segments), jnp.asarray(positions, jnp.int32)


def _nll_and_grads(cfg, fn):
  model = build(cfg, seed=1)()

  def loss(m):
    return fn(m)
  (value, aux), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
  return value, aux, nnx.state(grads, nnx.Param).to_pure_dict()


@pytest.mark.slow
@pytest.mark.parametrize('chunk', [5])  # 13 = 5 + 5 + 3: a padded last piece
def test_chunked_nll_equals_plain_loss_and_grads(chunk):
  tokens, targets, weights, segments, positions = _batch()

  def fn(m):
    x, _ = m.hidden(tokens, positions, segments)
    nll, correct = losses.token_nll(m, x, targets, weights)
    return nll, correct
  plain = _nll_and_grads(CFG, fn)
  chunked = _nll_and_grads(dataclasses.replace(CFG, loss_chunk=chunk), fn)
  # The plain path is the optax loss the trainers used before chunking.
  import optax
  model = build(CFG, seed=1)()
  logits, _ = model(tokens, positions, segments)
  reference = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights)
  np.testing.assert_allclose(plain[0], reference, rtol=1e-6)
  np.testing.assert_allclose(chunked[0], plain[0], rtol=1e-6)
  assert float(chunked[1]) == float(plain[1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), chunked[2], plain[2])


@pytest.mark.slow
def test_chunked_logp_and_entropy_equal_plain():
  tokens, targets, _, segments, positions = _batch(L=11, seed=3)

  def fn(m):
    x, _ = m.hidden(tokens, positions, segments)
    logp, entropy = losses.token_logp(m, x[:, 3:10], targets[:, 3:10], temperature=0.7)
    return jnp.sum(logp) + 0.1 * jnp.sum(entropy), (logp, entropy)
  plain = _nll_and_grads(CFG, fn)
  chunked = _nll_and_grads(dataclasses.replace(CFG, loss_chunk=3), fn)
  for a, b in zip(chunked[1], plain[1]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  # Against softmax of the full logits by hand.
  model = build(CFG, seed=1)()
  logits, _ = model(tokens, positions, segments)
  logp = jax.nn.log_softmax(logits[:, 3:10] / 0.7, axis=-1)
  expected = jnp.take_along_axis(logp, targets[:, 3:10, None], axis=-1)[..., 0]
  np.testing.assert_allclose(plain[1][0], expected, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), chunked[2], plain[2])


@pytest.mark.slow
def test_dot_product_attention_equals_the_einsum_path():
  tokens, targets, weights, segments, positions = _batch(seed=5)
  fast = dataclasses.replace(CFG, attention='dot_product')

  def fn(m):
    logits, _ = m(tokens, positions, segments)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * weights), logits
  ref, fast_out = _nll_and_grads(CFG, fn), _nll_and_grads(fast, fn)
  real = np.asarray(segments) != 0  # padding rows attend to nothing: their outputs are not used
  np.testing.assert_allclose(np.asarray(fast_out[1])[real], np.asarray(ref[1])[real], atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), fast_out[2], ref[2])
  # Prefill then decode through the KV cache.
  model = build(fast, seed=1)()
  full, _ = nnx.jit(lambda m, t: m(t))(model, tokens)
  step = nnx.jit(lambda m, t, c: m(t, cache=c))
  logits, cache = step(model, tokens[:, :8], init_cache(fast, batch=3, max_len=16))
  outs = [logits]
  for t in range(8, 13):
    logits, cache = step(model, tokens[:, t:t + 1], cache)
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_bad_switch_values_are_named():
  with pytest.raises(ValueError, match='model.attention'):
    dataclasses.replace(CFG, attention='flash')
  with pytest.raises(ValueError, match='model.loss_chunk'):
    dataclasses.replace(CFG, loss_chunk=-1)


def test_target_logit_gradient_equals_autodiff_of_the_gather():
  # _at_targets has a hand-written backward (a one-hot select instead of the gather's scatter).
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, size=(2, 5)), jnp.int32)
  w = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)

  def ours(x):
    return jnp.sum(losses._at_targets(x, targets) * w)

  def reference(x):
    return jnp.sum(jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0] * w)
  np.testing.assert_allclose(ours(x), reference(x), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(reference)(x), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(ours))(x), jax.grad(reference)(x), rtol=1e-6)
