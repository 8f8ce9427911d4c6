"""optim.train_layers: only the top N blocks (and the final norm and head) train, and the backward
pass leaves the rest alone."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deliberative import config_lib
from deliberative.model import loading
from deliberative.model.config import ModelConfig
from deliberative.trainers import optim

from train_fixtures import tiny_sft_config


def _cfg(**changes) -> ModelConfig:
  cfg = ModelConfig.from_dict(config_lib.model_config('tiny', d_model=32, n_layers=3, n_heads=2, n_kv_heads=1,
                                                      ffn_dim=64, vocab_size=64))
  return dataclasses.replace(cfg, **changes)


def _grads(cfg: ModelConfig, frozen: int):
  model = loading.create(cfg, seed=1)
  params = loading.params_of(model)
  tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, cfg.vocab_size)

  def loss(p):
    x, _ = loading.from_params(cfg, p).hidden(tokens, frozen_layers=frozen)
    return jnp.sum(loading.from_params(cfg, p).logits(x) ** 2) * 1e-3
  return params, jax.jit(jax.value_and_grad(loss))(params)


def _block(tree, cfg: ModelConfig, i: int):
  return tree['blocks'][i] if not cfg.scan_layers else jax.tree.map(lambda a: a[i], tree['blocks'])


@pytest.mark.parametrize('scan_layers, tied', [(False, False), (True, True)])  # both layouts, both heads
def test_frozen_blocks_get_no_gradient_and_the_loss_is_unchanged(scan_layers, tied):
  cfg = _cfg(scan_layers=scan_layers, tie_embeddings=tied)
  _, (loss_all, _) = _grads(cfg, 0)
  _, (loss, grads) = _grads(cfg, 2)
  np.testing.assert_allclose(loss, loss_all, rtol=1e-6)  # freezing changes the gradient only
  for i in range(2):
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(_block(grads, cfg, i))), f'block {i}'
  assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(_block(grads, cfg, 2)))
  assert np.any(np.asarray(grads['final_norm']['scale'] if 'scale' in grads['final_norm']
                           else jax.tree.leaves(grads['final_norm'])[0]))
  # A tied table is the head too: it trains through the head only. An untied one is frozen.
  assert bool(np.any(np.asarray(grads['embed']))) == tied


def test_mfu_counts_a_frozen_block_forward_only():
  from deliberative.trainers import metrics
  cfg = _cfg()
  full, top1 = metrics.flops_per_token(cfg, 16), metrics.flops_per_token(cfg, 16, frozen_layers=2)
  none = metrics.flops_per_token(cfg, 16, frozen_layers=3)
  assert none < top1 < full
  # each frozen block saves 4 of its 6 FLOPs per parameter and 2/3 of its attention
  assert full - top1 == pytest.approx(2 * (full - none) / 3)


@pytest.mark.parametrize('train, frozen', [(0, 0), (1, 2), (3, 0)])
def test_train_layers_counts_from_the_top(train, frozen):
  import ml_collections
  assert optim.frozen_layers(ml_collections.ConfigDict({'train_layers': train}), 3) == frozen


@pytest.mark.parametrize('train', [4, -1])
def test_a_layer_count_the_model_lacks_is_refused_naming_the_field(train):
  import ml_collections
  with pytest.raises(ValueError, match=f'config.optim.train_layers={train}: the model has 3 blocks'):
    optim.frozen_layers(ml_collections.ConfigDict({'train_layers': train}), 3)


@pytest.mark.slow
def test_sft_trains_the_top_blocks_and_leaves_the_rest_bit_identical(tmp_path, demo_data_dir):
  """Weight decay would move frozen weights with a zero gradient: the optimizer's mask keeps them."""
  from deliberative import train
  from deliberative.trainers import state as state_lib
  from deliberative.weights import hf
  config = tiny_sft_config(demo_data_dir, total_steps=2, **{'optim.train_layers': 1, 'optim.weight_decay': 0.1,
                                                            'optim.warmup_steps': 0})
  cfg = ModelConfig.from_dict(config.model)
  start = loading.params_of(loading.create(cfg, seed=11))
  hf.export(start, cfg, str(tmp_path / 'hf'))
  config.init_from = str(tmp_path / 'hf')
  summary = train.run(config, str(tmp_path / 'run'))
  assert summary['final_step'] == 2
  trained = state_lib.load_params(str(tmp_path / 'run'), cfg, loading.abstract_params(cfg))
  frozen = cfg.n_layers - 1
  for i in range(cfg.n_layers):
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                        _block(trained, cfg, i), _block(start, cfg, i))
    assert all(jax.tree.leaves(same)) == (i < frozen), f'block {i}'
  assert np.array_equal(np.asarray(trained['embed']), np.asarray(start['embed'])) == (not cfg.tie_embeddings)
