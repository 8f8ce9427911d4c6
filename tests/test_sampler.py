"""The sampler against the plain full forward pass."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deliberative.model import loading
from deliberative.model.config import ModelConfig
from deliberative.inference import hlo
from deliberative.inference.sampler import Sampler, SamplingParams

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)


def _reference_greedy(model, prompt, n, stop_ids):
  """Step-by-step argmax of the full (uncached) forward over a fixed-size buffer."""
  forward = nnx.jit(lambda m, t: m(t)[0])
  buf = np.zeros((1, len(prompt) + n), np.int32)
  buf[0, :len(prompt)] = prompt
  out = []
  for t in range(len(prompt), len(prompt) + n):
    logits = np.asarray(forward(model, jnp.asarray(buf)))[0, t - 1]
    buf[0, t] = int(logits.argmax())
    out.append(int(buf[0, t]))
    if out[-1] in stop_ids:
      break
  return out


def test_greedy_equals_stepwise_argmax_of_full_forward():
  model = loading.create(CFG, seed=7)
  params = nnx.state(model)
  rng = np.random.default_rng(0)
  prompts = [rng.integers(1, 64, size=n).tolist() for n in (3, 11, 7)]
  sampler = Sampler(CFG, stop_ids=[5], pad_id=0, length_buckets=(16,), batch_buckets=(4,))
  out = sampler(params, prompts, jax.random.key(0), SamplingParams(max_new_tokens=12))
  for i, p in enumerate(prompts):
    assert out.completion(i) == _reference_greedy(model, p, 12, {5})
    # log-probs are those of the full forward's distribution at each chosen token
  assert out.tokens.shape == (3, 12)


def test_decode_weights_converted_once_per_weights():
  # The decode layout (unstacked, q/k/v and gate/up fused) is kept while the same arrays come back
  # (evaluation, serving), and made afresh when new weights come (an RL step).
  model = loading.create(CFG, seed=3)
  params = loading.params_of(model)
  sampler = Sampler(CFG, stop_ids=[], length_buckets=(8,), batch_buckets=(1,))
  assert sampler.fuse_projections and sampler.keep_decode_params  # the CPU defaults
  first = sampler(params, [[1, 2, 3]], jax.random.key(0), SamplingParams(max_new_tokens=5))
  kept = sampler.program_params(params)
  assert sampler.program_params(params) is kept and 'qkv' in kept['blocks'][0]['attn']
  changed = jax.tree.map(lambda x: -x, params)
  second = sampler(changed, [[1, 2, 3]], jax.random.key(0), SamplingParams(max_new_tokens=5))
  assert sampler.program_params(changed) is not kept
  assert not np.allclose(second.logprobs, first.logprobs)
  assert second.completion(0) == _reference_greedy(nnx.merge(nnx.graphdef(model), changed), [1, 2, 3], 5, set())
  assert first.completion(0) == _reference_greedy(model, [1, 2, 3], 5, set())
  assert sampler.compiles == 1


def test_logprobs_match_full_forward_and_no_recompile_within_bucket():
  model = loading.create(CFG, seed=1)
  params = nnx.state(model)
  sampler = Sampler(CFG, stop_ids=[], length_buckets=(16,), batch_buckets=(2,))
  sampling = SamplingParams(temperature=1.0, max_new_tokens=6)
  out = sampler(params, [[1, 2, 3], [4, 5]], jax.random.key(3), sampling)
  full_seq = [1, 2, 3] + out.completion(0)
  logits = np.asarray(nnx.jit(lambda m, t: m(t)[0])(model, jnp.asarray([full_seq])))[0]
  logp = jax.nn.log_softmax(logits, axis=-1)
  expected = [float(logp[2 + t, full_seq[3 + t]]) for t in range(6)]
  np.testing.assert_allclose(out.logprobs[0], expected, atol=1e-5)
  # Other prompts of the same buckets reuse the compiled program.
  sampler(params, [[9, 9, 9, 9, 9]], jax.random.key(4), sampling)
  assert sampler.compiles == 1


@pytest.mark.slow
def test_top_k_one_is_greedy_and_stops_on_stop_token():
  model = loading.create(CFG, seed=2)
  params = nnx.state(model)
  greedy = Sampler(CFG, stop_ids=[], length_buckets=(8,), batch_buckets=(1,))(
      params, [[3, 4]], jax.random.key(0), SamplingParams(max_new_tokens=8))
  topk = Sampler(CFG, stop_ids=[], length_buckets=(8,), batch_buckets=(1,))(
      params, [[3, 4]], jax.random.key(0), SamplingParams(temperature=0.7, top_k=1, max_new_tokens=8))
  assert greedy.completion(0) == topk.completion(0)
  stop = greedy.completion(0)[2]
  stopped = Sampler(CFG, stop_ids=[stop], length_buckets=(8,), batch_buckets=(1,))(
      params, [[3, 4]], jax.random.key(0), SamplingParams(max_new_tokens=8))
  assert stopped.completion(0)[-1] == stop and stopped.stopped[0]
  assert stopped.lengths[0] == greedy.completion(0).index(stop) + 1


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)['flops'])


@pytest.mark.slow
def test_rows_split_over_the_mesh_same_samples_an_eighth_of_the_work():
  """With a mesh, prompts are split over its batch axes (not computed whole on every device)."""
  from deliberative import config_lib
  from deliberative.model import sharding
  mesh_cfg = config_lib.default_mesh_config()
  mesh_cfg.data = -1
  mesh, rules = sharding.make_mesh(mesh_cfg), sharding.normalize_rules(mesh_cfg.rules)
  assert mesh.shape['data'] == 8
  params = loading.params_of(loading.create(CFG, mesh, rules, seed=7))
  rng = np.random.default_rng(1)
  prompts = [rng.integers(1, 64, size=int(n)).tolist() for n in rng.integers(2, 16, size=16)]
  sampling = SamplingParams(temperature=1.0, max_new_tokens=6)
  split = Sampler(CFG, stop_ids=[], length_buckets=(16,), batch_buckets=(16,), batch_multiple=8, mesh=mesh)
  whole = Sampler(CFG, stop_ids=[], length_buckets=(16,), batch_buckets=(16,))
  a, b = (s(params, prompts, jax.random.key(3), sampling) for s in (split, whole))
  np.testing.assert_array_equal(a.tokens, b.tokens)  # the draws do not depend on the layout
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)

  per_device = {name: _flops(s.lower(params, 16, 16, sampling).compile())
                for name, s in (('split', split), ('whole', whole))}
  assert per_device['whole'] / per_device['split'] > 6, per_device


def test_decode_step_never_copies_the_kv_cache():
  # Each decode step writes one slot per layer in place; a copy or transpose of a whole layer's
  # cache inside the loop (what XLA:CPU did before: layout and copy-insertion) costs a pass over
  # the cache per layer per token.
  # Heads of 64, as real models have: XLA:CPU computes toy-sized products without a library call,
  # and so without the layout constraints that made it copy.
  cfg = ModelConfig(vocab_size=128, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=256)
  batch, prompt_len, new = 2, 16, 8
  sampler = Sampler(cfg, stop_ids=[], length_buckets=(prompt_len,), batch_buckets=(batch,))
  params = nnx.state(loading.create(cfg, seed=0))
  text = sampler.lower(params, batch, prompt_len, SamplingParams(max_new_tokens=new)).compile().as_text()
  cache_elems = batch * cfg.n_kv_heads * (prompt_len + new) * cfg.head_dim_
  offenders = []
  for line in hlo.while_body_instructions(text):
    m = re.match(r'\s*(?:ROOT )?%?[\w.\-]+ = f32\[([\d,]*)\]\S* (\S+?)\(', line)
    if not m or np.prod([int(d) for d in m.group(1).split(',') if d]) != cache_elems:
      continue
    # Allowed: views, and the in-place write (a dynamic-update-slice, alone or as a fusion's root).
    if m.group(2) in ('parameter', 'get-tuple-element', 'bitcast', 'dynamic-update-slice') or (
        'dynamic-update-slice' in line.split(' = ')[0]):
      continue
    offenders.append(line.strip()[:160])
  assert not offenders, offenders


@pytest.mark.slow
def test_tensor_parallel_decode_equals_single_device():
  # Heads and the MLP split over 'tensor': the sampler's fused q/k/v kernel is grouped per key head,
  # so each shard fuses its own heads' kernels and the samples are those of one device.
  from deliberative.model import sharding
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  rules = sharding.DEFAULT_RULES
  params = loading.params_of(loading.create(CFG, mesh, rules, seed=5))
  assert params['blocks'][0]['attn']['q'].sharding.spec == sharding.logical_to_spec(('embed', 'heads', 'kv'), rules)
  prompts = [[1, 2, 3], [7, 8], [9, 10, 11, 12], [4]]
  sampling = SamplingParams(temperature=1.0, max_new_tokens=6)
  split = Sampler(CFG, stop_ids=[], length_buckets=(8,), batch_buckets=(4,), batch_multiple=4, mesh=mesh, rules=rules)
  whole = Sampler(CFG, stop_ids=[], length_buckets=(8,), batch_buckets=(4,))
  a, b = (s(params, prompts, jax.random.key(2), sampling) for s in (split, whole))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_decode_loop_runs_three_fewer_kernels_per_layer_fused():
  # q/k/v as one matmul and gate/up as one (ModelConfig.fused_projections): per layer and token, three
  # kernels fewer in the compiled decode loop than with the separate kernels (XLA:CPU runs small
  # products as `dot`s or as library-call fusions, so kernels are counted, not dots).
  cfg = ModelConfig(vocab_size=128, d_model=256, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=256)
  params = loading.params_of(loading.create(cfg, seed=0))
  counts = {}
  for fused in (False, True):
    sampler = Sampler(cfg, stop_ids=[], length_buckets=(16,), batch_buckets=(2,), fuse_projections=fused)
    text = sampler.lower(params, 2, 16, SamplingParams(max_new_tokens=4)).compile().as_text()
    body = hlo.while_body_instructions(text)
    counts[fused] = hlo.kernel_count(body)
  assert counts[False] - counts[True] >= 3 * cfg.n_layers, counts


def test_kernel_count_reads_tuple_shaped_instructions_and_skips_views():
  # A multi-output fusion's shape is a tuple with spaces in it; views of buffers launch nothing.
  body = ['  %f = (f32[1]{0}, s32[1]{0}) fusion(%a), kind=kLoop, calls=%c',
          '  %d = f32[1,256]{1,0} dot(%x, %y), lhs_contracting_dims={0}',
          '  %g = f32[2]{0} get-tuple-element(%t), index=1',
          '  ROOT %t = (s32[], /*index=1*/f32[2]{0}) tuple(%f, %d)',
          '  %b = f32[256,1]{1,0} bitcast(%d)']
  assert [hlo.opcode(line) for line in body] == ['fusion', 'dot', 'get-tuple-element', 'tuple', 'bitcast']
  assert hlo.kernel_count(body) == 2
