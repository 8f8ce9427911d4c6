"""model.scan_layers: the stacked, scanned blocks equal the unrolled ones everywhere weights meet
the outside (forward, gradients, decode, HF/GGUF import and export, Orbax checkpoints, sharding),
and the compiled program really holds one scanned layer."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from deliberative.weights import checkpoints, source
from deliberative import config_lib
from deliberative.weights import gguf, hf
from deliberative.model import layout, loading, sharding
from deliberative.model.config import ModelConfig
from deliberative.inference.sampler import Sampler, SamplingParams
from deliberative.trainers.checkpointing import Checkpointer

CFG = ModelConfig(vocab_size=96, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=48, head_dim=8)
SCAN = dataclasses.replace(CFG, scan_layers=True)


def _pair(cfg=CFG, seed=0):
  """(unrolled model, scanned model holding the same weights via layout.stack_layers)."""
  unrolled = loading.create(cfg, seed=seed)
  stacked = layout.stack_layers(loading.params_of(unrolled))
  return unrolled, loading.from_params(dataclasses.replace(cfg, scan_layers=True), stacked)


def _packed_batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, CFG.vocab_size, size=(2, 12)), jnp.int32)
  segment_ids = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3, [1] * 12], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(4)) + [0] * 3, list(range(12))], jnp.int32)
  return tokens, positions, segment_ids


def _max_diff(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


def test_same_seed_builds_the_same_weights_in_either_layout():
  stacked = loading.params_of(loading.create(SCAN, seed=4))
  unrolled = loading.params_of(loading.create(CFG, seed=4))
  assert jax.tree.map(jnp.shape, stacked['blocks']['attn']['q']) == (3, 32, 4, 8)
  assert _max_diff(layout.stack_layers(unrolled), stacked) == 0.0
  assert _max_diff(layout.unstack_layers(stacked, CFG.n_layers), unrolled) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize('remat', ['none', 'full'])
def test_scanned_logits_and_gradients_equal_unrolled(remat):
  cfg = dataclasses.replace(CFG, remat=remat)
  unrolled, scanned = _pair(cfg, seed=1)
  tokens, positions, segment_ids = _packed_batch()
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, 12, CFG.vocab_size)), jnp.float32)

  def value_and_grad(model):
    graphdef, state = nnx.split(model)

    def loss(state):
      logits, _ = nnx.merge(graphdef, state)(tokens, positions, segment_ids)
      return jnp.mean(logits * weights), logits
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
    return logits, grads.to_pure_dict()

  logits_u, grads_u = value_and_grad(unrolled)
  logits_s, grads_s = value_and_grad(scanned)
  assert float(jnp.max(jnp.abs(logits_u - logits_s))) <= 1e-5
  assert _max_diff(layout.stack_layers(grads_u), grads_s) <= 1e-5
  assert _max_diff(grads_u, layout.unstack_layers(grads_s)) <= 1e-5


def test_greedy_decode_with_kv_cache_equals_unrolled():
  unrolled, scanned = _pair(seed=2)
  rng = np.random.default_rng(3)
  prompts = [rng.integers(1, CFG.vocab_size, size=n).tolist() for n in (4, 9, 6)]
  outs = []
  for cfg, model in ((CFG, unrolled), (SCAN, scanned)):
    sampler = Sampler(cfg, stop_ids=[5], pad_id=0, length_buckets=(16,), batch_buckets=(4,))
    outs.append(sampler(nnx.state(model), prompts, jax.random.key(0), SamplingParams(max_new_tokens=10)))
  np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
  np.testing.assert_allclose(outs[0].logprobs, outs[1].logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize('export_scanned', [True, False], ids=['scanned-to-unrolled', 'unrolled-to-scanned'])
def test_hf_export_and_import_across_layouts(tmp_path, export_scanned):
  unrolled, scanned = _pair(dataclasses.replace(CFG, qkv_bias=True), seed=5)
  src_cfg, src_model = (scanned.cfg, scanned) if export_scanned else (unrolled.cfg, unrolled)
  out = str(tmp_path / 'hf')
  hf.export(loading.params_of(src_model), src_cfg, out, max_shard_bytes=20_000)
  cfg, model, _ = source.load(out, scan_layers=not export_scanned)
  assert cfg.scan_layers == (not export_scanned)
  expected = loading.params_of(unrolled if export_scanned else scanned)
  assert _max_diff(loading.params_of(model), expected) == 0.0


def test_gguf_import_stacks_per_layer_tensors(tmp_path):
  from tests.hf_fixtures import tiny_hf_model
  from tests.test_gguf import write_gguf
  ref = tiny_hf_model('llama', str(tmp_path / 'hf'), tie=False, seed=3, intermediate_size=128)
  f = gguf.GGUFFile(write_gguf(str(tmp_path / 'm.gguf'), ref, 'llama'))
  cfg = gguf.read_config(f)
  unrolled = gguf.load_params(f, cfg, loading.abstract_params(cfg))
  scan_cfg = dataclasses.replace(cfg, scan_layers=True)
  stacked = gguf.load_params(f, scan_cfg, loading.abstract_params(scan_cfg))
  assert _max_diff(layout.stack_layers(unrolled), stacked) == 0.0


def _mesh():
  return sharding.make_mesh({'data': 1, 'fsdp': 2, 'tensor': 4})


@pytest.mark.slow
def test_sharded_scanned_params_put_the_layer_axis_first_replicated():
  mesh, rules = _mesh(), sharding.DEFAULT_RULES
  cfg = dataclasses.replace(SCAN, n_heads=8, n_kv_heads=4, ffn_dim=64, vocab_size=128)
  model = loading.create(cfg, mesh, rules, seed=0)
  unrolled = loading.create(dataclasses.replace(cfg, scan_layers=False), mesh, rules, seed=0)
  for stacked, per_layer in zip(jax.tree.leaves(loading.params_of(model)['blocks']),
                                jax.tree.leaves(loading.params_of(unrolled)['blocks'][0])):
    assert stacked.sharding.spec == P(None, *per_layer.sharding.spec)
  assert model.blocks.attn.q[...].sharding.spec == P(None, 'fsdp', 'tensor', None)

  tokens, positions, segment_ids = _packed_batch()
  forward = nnx.jit(lambda m: m(tokens, positions, segment_ids)[0])
  reference = forward(unrolled)
  with sharding.use_mesh(mesh, rules):
    logits = forward(model)
  assert float(jnp.max(jnp.abs(logits - reference))) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize('saved_scanned', [True, False], ids=['scanned-to-unrolled', 'unrolled-to-scanned'])
def test_orbax_params_load_under_the_other_setting(tmp_path, monkeypatch, saved_scanned):
  unrolled, scanned = _pair(seed=6)
  saved_cfg, saved = (SCAN, scanned) if saved_scanned else (CFG, unrolled)
  checkpoints.save_params(str(tmp_path), 0, loading.params_of(saved), {'model': saved_cfg.to_dict()})

  mesh, rules = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2}), sharding.DEFAULT_RULES
  cfg = dataclasses.replace(CFG, scan_layers=not saved_scanned)
  abstract = loading.abstract_params(cfg, mesh, rules)
  restored = checkpoints.restore_params(str(tmp_path), abstract)
  expected = loading.params_of(unrolled if saved_scanned else scanned)
  assert _max_diff(restored, expected) == 0.0
  assert jax.tree.map(lambda x: x.sharding, restored) == jax.tree.map(lambda x: x.sharding, abstract)

  # The whole load path (source -> architecture with the run's setting -> params).
  cfg2, model, _ = source.load(str(tmp_path), scan_layers=not saved_scanned)
  assert cfg2.scan_layers == (not saved_scanned)
  assert _max_diff(loading.params_of(model), expected) == 0.0
  # A path relative to the working directory (`evaluate --checkpoint runs/sft`) loads the same.
  monkeypatch.chdir(tmp_path.parent)
  _, model, _ = source.load(tmp_path.name, scan_layers=not saved_scanned)
  assert _max_diff(loading.params_of(model), expected) == 0.0


def _train_state(params, tx):
  return {'params': params, 'opt_state': tx.init(params), 'step': jnp.asarray(3, jnp.int32),
          'rng': jax.random.key_data(jax.random.key(0))}


def test_training_resume_converts_params_and_optimizer_moments(tmp_path):
  unrolled, scanned = _pair(seed=7)
  tx = optax.adamw(1e-3)
  grads = jax.tree.map(jnp.ones_like, loading.params_of(unrolled))
  state = _train_state(loading.params_of(unrolled), tx)
  state['opt_state'] = tx.update(grads, state['opt_state'], state['params'])[1]  # non-zero moments
  ckpt_cfg = ml_collections.ConfigDict({'every_steps': 1, 'keep': 2, 'async_save': False})
  with Checkpointer(str(tmp_path), ckpt_cfg) as ckpt:
    ckpt.save(state, {'pos': 1}, {'model': CFG.to_dict()}, wait=True)

  target = _train_state(loading.params_of(scanned), tx)
  abstract = checkpoints.abstract_of(target)
  with Checkpointer(str(tmp_path), ckpt_cfg) as ckpt:
    restored, data, _ = ckpt.restore(abstract)
  assert data == {'pos': 1}
  assert _max_diff(restored['params'], loading.params_of(scanned)) == 0.0
  assert _max_diff(restored['opt_state'], layout.convert_all(state['opt_state'], stacked=True)) == 0.0
  assert int(restored['step']) == 3


def test_scanned_program_holds_one_scan_and_is_smaller():
  cfg = dataclasses.replace(CFG, n_layers=4)
  tokens, positions, segment_ids = _packed_batch()
  texts = {}
  for scan in (False, True):
    model = loading.create(dataclasses.replace(cfg, scan_layers=scan), seed=0)
    graphdef, state = nnx.split(model)
    forward = lambda s: nnx.merge(graphdef, s)(tokens, positions, segment_ids)[0]  # noqa: E731
    jaxpr = jax.make_jaxpr(forward)(state)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == 'scan']
    assert len(scans) == (1 if scan else 0)
    texts[scan] = jax.jit(forward).lower(state).as_text()
  assert len(texts[True]) < len(texts[False]) * 0.6


def test_real_presets_scan_and_demo_presets_do_not():
  assert config_lib.model_config('llama3.2-1b').scan_layers
  assert config_lib.model_config('qwen2.5-0.5b').scan_layers
  assert config_lib.model_config('smollm2').scan_layers
  assert not config_lib.model_config('tiny').scan_layers
  assert not config_lib.model_config('small').scan_layers
  # Pod presets take the TPU attention kernel; the CPU-sized ones the einsum path.
  assert config_lib.model_config('llama3.1-8b').attention == config_lib.model_config('qwen2.5-7b').attention == 'splash'
  assert config_lib.model_config('smollm2').attention == config_lib.model_config('tiny').attention == 'xla'
  assert 'layers' in sharding.LOGICAL_AXES and dict(sharding.DEFAULT_RULES)['layers'] is None
