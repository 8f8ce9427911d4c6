"""The long-sequence attention paths (model/attention.py) equal the einsum ('xla') path: forward and
gradients, packed rows of several segments with padding, GQA; and the blockwise path holds no
[L, L] array in its forward or backward pass.

Splash is a TPU kernel: here it runs in Pallas's interpreter (`interpret=True`), the same kernel
code executed op by op on the CPU. tests/test_aot_compile.py compiles it for a TPU topology.
"""

import dataclasses
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deliberative.model import attention, sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import build

# GQA: 4 query heads over 2 key/value heads.
CFG = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, tie_embeddings=True)


def _packed_batch(B, L, seed=0):
  """Rows of 1, 3 and 2 segments (the last row ending in padding), segments crossing block edges;
  positions restart at each segment, as packing.py makes them."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CFG.vocab_size, (B, L))
  segments = np.ones((B, L), np.int32)
  segments[1, L * 2 // 5:] = 2
  segments[1, L * 4 // 5:] = 3
  segments[2, L // 2:] = 2
  segments[2, L - 2:] = 0
  positions = np.zeros((B, L), np.int32)
  for b in range(B):
    for t in range(1, L):
      positions[b, t] = positions[b, t - 1] + 1 if segments[b, t] == segments[b, t - 1] else 0
  weights = rng.random((B, L)) * (segments != 0)  # the loss reads real positions only
  return (jnp.asarray(tokens, jnp.int32), jnp.asarray(positions), jnp.asarray(segments),
          jnp.asarray(weights, jnp.float32))


def _logits_and_grads(cfg, tokens, positions, segments, weights):
  model = build(cfg, seed=1)()

  def loss(m):
    logits, _ = m(tokens, positions, segments)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * weights), logits
  (_, logits), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
  return np.asarray(logits), nnx.state(grads, nnx.Param).to_pure_dict()


def _assert_same_as_xla(cfg, batch):
  tokens, positions, segments, weights = batch
  logits, grads = _logits_and_grads(cfg, *batch)
  ref_logits, ref_grads = _logits_and_grads(dataclasses.replace(cfg, attention='xla'), *batch)
  real = np.asarray(segments) != 0  # padding positions attend to nothing; no real position reads them
  np.testing.assert_allclose(logits[real], ref_logits[real], rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), grads, ref_grads)


# 4 blocks; a length not a multiple of the block (padded); one block.
@pytest.mark.parametrize('block', [4, pytest.param(5, marks=pytest.mark.slow), pytest.param(16, marks=pytest.mark.slow)])
def test_chunked_equals_xla_forward_and_gradients(block):
  cfg = dataclasses.replace(CFG, attention='chunked', attention_block=block, n_layers=1)
  _assert_same_as_xla(cfg, _packed_batch(3, 16))


def test_chunked_scanned_and_rematerialised_layers_equal_xla():
  cfg = dataclasses.replace(CFG, attention='chunked', attention_block=4, scan_layers=True, remat='full')
  _assert_same_as_xla(cfg, _packed_batch(3, 13, seed=2))


def _all_shapes(jaxpr):
  """Every intermediate's shape in a jaxpr, inside loops, scans and custom rules too."""
  for eqn in jaxpr.eqns:
    yield from (v.aval.shape for v in eqn.outvars if hasattr(v.aval, 'shape'))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _all_shapes(sub)


def test_chunked_holds_no_length_by_length_array():
  B, L, K, G, D, block = 1, 256, 2, 2, 8, 32
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (B, L, K, G, D))
  k, v = (jax.random.normal(kk, (B, L, K, D)) for kk in keys[1:])
  seg = jnp.ones((B, L), jnp.int32)

  def loss(q, k, v):
    return jnp.sum(attention.chunked(q, k, v, seg, block) ** 2)
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v).jaxpr
  shapes = list(_all_shapes(jaxpr))
  assert any(block in s and s.count(block) == 2 for s in shapes)  # the walk sees the block scores
  assert not [s for s in shapes if sum(d >= L for d in s) >= 2], 'an [L, L] intermediate'


def test_attention_block_must_be_positive():
  with pytest.raises(ValueError, match='model.attention_block'):
    dataclasses.replace(CFG, attention='chunked', attention_block=0)


@pytest.fixture
def interpreted_splash(monkeypatch):
  monkeypatch.setattr(attention, 'splash', functools.partial(attention.splash, interpret=True))


@pytest.mark.slow
def test_splash_interpreted_equals_xla_forward_and_gradients(interpreted_splash):
  # 200 positions: padded to 256, two blocks of 128 (the kernel's smallest).
  cfg = dataclasses.replace(CFG, attention='splash', attention_block=128)
  _assert_same_as_xla(cfg, _packed_batch(3, 200, seed=3))


@pytest.mark.slow
def test_splash_runs_per_shard_on_a_mesh(interpreted_splash):
  """On the 8 fake devices as (data, fsdp, tensor) = (2, 2, 2): rows split four ways and key heads two,
  each shard's kernel given its own rows and heads (a wrong split would mix rows or heads)."""
  B, L, K, G, D = 4, 128, 2, 2, 8
  keys = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(keys[0], (B, L, K, G, D))
  k, v = (jax.random.normal(kk, (B, L, K, D)) for kk in keys[1:])
  seg = jnp.asarray(np.repeat(np.arange(1, B + 1)[:, None], L, axis=1))  # one segment id per row
  seg = seg.at[:, L // 2:].add(10)  # and a second segment in each
  mesh = jax.make_mesh((2, 2, 2), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  sharded = jax.jit(sharding.under_mesh(attention.splash, mesh, sharding.DEFAULT_RULES), static_argnums=4)
  expected = attention.chunked(q, k, v, seg, 32)
  np.testing.assert_allclose(sharded(q, k, v, seg, 128), expected, rtol=1e-5, atol=1e-5)
  assert 'sdy.manual_computation' in sharded.lower(q, k, v, seg, 128).as_text()  # shard_map: per shard


def test_splash_block_is_the_largest_multiple_of_128_dividing_the_length():
  assert attention.splash_block(8192, 512) == 512
  assert attention.splash_block(1280, 512) == 256  # 256 prompt + 1,024 new tokens: 512 does not divide it
  assert attention.splash_block(384, 512) == 384
  assert attention.splash_block(256, 64) == 128  # below the kernel's smallest block


def test_splash_off_tpu_names_the_portable_path():
  q, k = jnp.zeros((1, 128, 1, 2, 8)), jnp.zeros((1, 128, 1, 8))
  with pytest.raises(ValueError, match="TPU kernel and this program is for cpu: use model.attention='chunked'"):
    attention.splash(q, k, k, jnp.ones((1, 128), jnp.int32), 128)


def test_splash_refuses_rows_split_over_the_mesh():
  mesh = jax.make_mesh((2, 2, 2), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = dict(sharding.DEFAULT_RULES, length='tensor')
  q, k = jnp.zeros((4, 128, 2, 2, 8)), jnp.zeros((4, 128, 2, 8))
  with sharding.use_mesh(mesh, rules), pytest.raises(ValueError, match=r"split 'length' over \('tensor',\)"):
    attention.splash(q, k, k, jnp.ones((4, 128), jnp.int32), 128, interpret=True)
