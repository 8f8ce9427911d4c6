"""The transformer: sharded == unsharded, packing, KV cache, presets, remat, mesh errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from deliberative import config_lib
from deliberative.model import layout, loading, sharding
from deliberative.model.config import ModelConfig
from deliberative.model.transformer import build, init_cache

CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=8, n_kv_heads=4, ffn_dim=96, head_dim=16)


@nnx.jit
def _run(model, *args, cache=None):
  # Jitted calls: eager op-by-op dispatch would dominate these tiny tests.
  return model(*args, cache=cache)


def _tokens(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, size=shape), jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize('mesh_shape', [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_forward_equals_single_device(mesh_shape):
  tokens = _tokens((8, 16))
  reference, _ = _run(loading.create(CFG, seed=3), tokens)

  mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, mesh_shape)))
  rules = sharding.DEFAULT_RULES
  model = loading.create(CFG, mesh, rules, seed=3)
  with sharding.use_mesh(mesh, rules):
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])
    batch_sharding = NamedSharding(mesh, sharding.logical_to_spec(('batch', 'length'), rules))
    logits = forward(state, jax.device_put(tokens, batch_sharding))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(reference), atol=1e-5, rtol=0)

  # The parameters really live sharded as the rules say.
  data, fsdp, tensor = mesh_shape
  attn = model.blocks[0].attn
  assert attn.q[...].sharding.spec == P('fsdp' if fsdp > 1 else 'fsdp', 'tensor', None)
  assert model.embed[...].sharding.spec == P('tensor', 'fsdp')
  assert model.blocks[1].mlp.down[...].sharding.spec == P('tensor', 'fsdp')
  shard_shape = attn.q[...].addressable_shards[0].data.shape
  assert shard_shape == (CFG.d_model // fsdp, CFG.n_heads // tensor, CFG.head_dim_)
  assert model.lm_head[...].addressable_shards[0].data.shape == (CFG.d_model // fsdp, CFG.vocab_size // tensor)


def test_packed_segments_equal_separate_runs():
  model = loading.create(CFG, seed=1)
  a, b = _tokens((1, 9), 1), _tokens((1, 7), 2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 4), jnp.int32)], axis=1)
  segment_ids = jnp.asarray([[1] * 9 + [2] * 7 + [0] * 4])
  positions = jnp.asarray([list(range(9)) + list(range(7)) + [0] * 4])
  logits, _ = _run(model, packed, positions, segment_ids)
  alone_a, _ = _run(model, a)
  alone_b, _ = _run(model, b)
  np.testing.assert_allclose(logits[:, :9], alone_a, atol=1e-5, rtol=0)
  np.testing.assert_allclose(logits[:, 9:16], alone_b, atol=1e-5, rtol=0)
  assert np.isfinite(np.asarray(logits)).all()  # padding rows attend to nothing, yet stay finite


def test_kv_cache_prefill_then_decode_equals_full_forward():
  model = loading.create(CFG, seed=2)
  tokens = _tokens((2, 12), 4)
  full, _ = _run(model, tokens)
  cache = init_cache(CFG, batch=2, max_len=16)
  prefill, cache = _run(model, tokens[:, :8], cache=cache)
  steps = [prefill]
  for t in range(8, 12):
    step_logits, cache = _run(model, tokens[:, t:t + 1], cache=cache)
    steps.append(step_logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
  assert int(cache['index']) == 12


def test_left_padded_prompts_in_cache_match_unpadded():
  model = loading.create(CFG, seed=2)
  prompt = _tokens((1, 6), 5)
  alone, _ = _run(model, prompt)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prompt], axis=1)
  seg = jnp.asarray([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
  pos = jnp.asarray([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
  logits, _ = _run(model, padded, pos, seg, cache=init_cache(CFG, 1, 12))
  np.testing.assert_allclose(logits[:, 3:], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_fused_projections_equal_separate_kernels(scan_layers):
  # The sampler's layout (one q/k/v kernel grouped per key head, one gate/up kernel), converted from
  # the separate kernels, computes the same logits, biases and GQA included, in either layer layout.
  cfg = dataclasses.replace(CFG, qkv_bias=True, scan_layers=scan_layers)
  params = loading.params_of(loading.create(cfg, seed=4))
  # Non-zero biases, and a different draw per tensor, so a swapped q/k/v slice would show.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  params = jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  fused = layout.fuse_projections(params, cfg.n_heads, cfg.n_kv_heads)
  block = fused['blocks'] if scan_layers else fused['blocks'][0]
  depth = (cfg.n_layers,) if scan_layers else ()
  G = cfg.n_heads // cfg.n_kv_heads
  assert block['attn']['qkv'].shape == (*depth, cfg.d_model, cfg.n_kv_heads, G + 2, cfg.head_dim_)
  assert block['mlp']['gate_up'].shape == (*depth, cfg.d_model, 2, cfg.ffn_dim)
  assert not {'q', 'k', 'v', 'q_bias'} & set(block['attn']) and not {'gate', 'up'} & set(block['mlp'])
  fused_cfg = dataclasses.replace(cfg, fused_projections=True)
  tokens = _tokens((2, 10), 6)
  forward = jax.jit(lambda c, p, t: nnx.merge(nnx.graphdef(nnx.eval_shape(build(c))), p)(t)[0], static_argnums=0)
  np.testing.assert_allclose(forward(fused_cfg, fused, tokens), forward(cfg, params, tokens), atol=2e-5, rtol=0)
  assert layout.fuse_projections(fused, cfg.n_heads, cfg.n_kv_heads) == fused  # already fused: as is


def test_fused_projections_is_no_config_field():
  with pytest.raises(ValueError, match='fused_projections is the sampler'):
    ModelConfig.from_dict({**CFG.to_dict(), 'fused_projections': True})


def test_remat_gives_same_loss_and_grads():
  tokens = _tokens((2, 8))

  def loss_and_grad(cfg):
    model = build(cfg, seed=0)()
    def loss(m):
      return m(tokens)[0].mean()
    return nnx.jit(nnx.value_and_grad(loss))(model)

  plain_loss, plain_grads = loss_and_grad(CFG)
  remat_cfg = ModelConfig.from_dict({**CFG.to_dict(), 'remat': 'dots'})
  remat_loss, remat_grads = loss_and_grad(remat_cfg)
  assert abs(float(plain_loss) - float(remat_loss)) < 1e-6
  for x, y in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(remat_grads)):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_bf16_compute_runs_with_fp32_params_and_stays_close():
  tokens = _tokens((2, 8))
  fp32, _ = _run(build(CFG, seed=0)(), tokens)
  bf16_cfg = ModelConfig.from_dict({**CFG.to_dict(), 'dtype': 'bfloat16'})
  model = build(bf16_cfg, seed=0)()
  assert model.embed[...].dtype == jnp.float32
  bf16, _ = _run(model, tokens)
  assert bf16.dtype == jnp.float32
  assert float(jnp.abs(bf16 - fp32).max()) < 0.1


@pytest.mark.parametrize('preset', sorted(config_lib.PUBLISHED_PARAM_COUNTS))
def test_real_presets_match_published_parameter_counts(preset):
  cfg = ModelConfig.from_dict(config_lib.model_config(preset))
  abstract = nnx.state(nnx.eval_shape(build(cfg)), nnx.Param)
  counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  assert counted == cfg.param_count() == config_lib.PUBLISHED_PARAM_COUNTS[preset]


def test_cpu_presets_have_the_documented_sizes():
  tiny = ModelConfig.from_dict(config_lib.model_config('tiny')).param_count()
  small = ModelConfig.from_dict(config_lib.model_config('small')).param_count()
  assert 4.5e6 < tiny < 5.5e6 and 30e6 < small < 34e6


def test_heads_not_dividing_tensor_axis_fail_with_numbers():
  cfg = ModelConfig.from_dict(config_lib.model_config('qwen2.5-0.5b'))  # 14 heads, 2 kv heads
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 1, 'tensor': 4})
  with pytest.raises(ValueError, match=r'n_heads=14 is not divisible by mesh axis tensor=4'):
    loading.abstract_params(cfg, mesh)


def test_mesh_config_errors():
  with pytest.raises(ValueError, match='at most one axis may be -1'):
    sharding.mesh_shape({'data': -1, 'fsdp': -1, 'tensor': 1}, 8)
  with pytest.raises(ValueError, match='needs 6 devices, have 8'):
    sharding.mesh_shape({'data': 3, 'fsdp': 2, 'tensor': 1}, 8)
  assert sharding.mesh_shape({'data': -1, 'fsdp': 2, 'tensor': 2}, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    sharding.normalize_rules({'heads': 'model'})
