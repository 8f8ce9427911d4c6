"""Growing the vocabulary for added tokens: old rows untouched, new ones the mean, born sharded."""

import jax
import numpy as np
import pytest

from deliberative.model import loading, sharding, vocab
from deliberative.model.config import ModelConfig

TINY = dict(vocab_size=256, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=64)


@pytest.mark.slow
@pytest.mark.parametrize('tie', [False, True])
def test_grown_rows_are_the_mean_and_old_logits_are_unchanged(tie):
  cfg = ModelConfig(**TINY, tie_embeddings=tie)
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  model = loading.create(cfg, mesh, seed=3)
  params = loading.params_of(model)
  new_size = vocab.padded_vocab_size(cfg.vocab_size + 2, multiple=mesh.shape['tensor'] * 4)
  assert new_size == 264
  grown, new_cfg = vocab.grow_vocab(params, cfg, new_size, mesh)
  assert new_cfg.vocab_size == 264 and grown['embed'].shape == (264, 32)
  # Laid out as a model of the grown shape would be: the vocab axis split over `tensor`.
  want = loading.abstract_params(new_cfg, mesh)
  assert grown['embed'].sharding.is_equivalent_to(want['embed'].sharding, 2)
  embed = np.asarray(grown['embed'])
  np.testing.assert_array_equal(embed[:256], np.asarray(params['embed']))
  np.testing.assert_allclose(embed[256:], np.broadcast_to(np.asarray(params['embed']).mean(0), (8, 32)), atol=1e-6)

  tokens = np.arange(8, dtype=np.int32)[None] * 7
  positions = np.arange(8, dtype=np.int32)[None]
  segments = np.ones((1, 8), np.int32)
  old_logits, _ = loading.from_params(cfg, params)(tokens, positions, segments)
  new_logits, _ = loading.from_params(new_cfg, grown)(tokens, positions, segments)
  old_logits, new_logits = np.asarray(old_logits), np.asarray(new_logits)
  np.testing.assert_allclose(new_logits[..., :256], old_logits, atol=1e-5)
  if not tie:  # a mean head column gives the mean logit: the new token starts as the average one
    np.testing.assert_allclose(new_logits[..., 256:], np.broadcast_to(old_logits.mean(-1, keepdims=True),
                                                                    (1, 8, 8)), atol=1e-5)


def test_shrinking_is_refused():
  cfg = ModelConfig(**TINY)
  with pytest.raises(ValueError, match='cannot shrink the vocabulary from 256 to 200'):
    vocab.grow_vocab(loading.params_of(loading.create(cfg)), cfg, 200)


@pytest.mark.parametrize('tie', [False, True])
def test_new_token_rows_learn_at_their_own_rate(tie):
  """optim.new_token_lr_scale multiplies the Adam updates of the grown rows (embed rows, head
  columns) and of nothing else; at 1 the optimizer is the plain one."""
  import ml_collections
  import optax
  from deliberative.trainers import optim
  cfg = ModelConfig(**TINY, tie_embeddings=tie)
  grown, _ = vocab.grow_vocab(loading.params_of(loading.create(cfg, seed=1)), cfg, 260)
  grads = jax.tree.map(lambda p: np.ones(p.shape, p.dtype), grown)
  section = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, min_lr_ratio=1.0, b1=0.9, b2=0.95, eps=1e-8,
                                           weight_decay=0.0, grad_clip=0.0, new_token_lr_scale=30.0))

  def first_update(section, rows):
    tx, _ = optim.make(section, 10, rows)
    updates, _ = tx.update(grads, tx.init(grown), grown)
    return updates

  plain = first_update(section, None)
  scaled = first_update(section, (256, 260))
  np.testing.assert_allclose(np.asarray(scaled['embed'][256:]), 30.0 * np.asarray(plain['embed'][256:]), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(scaled['embed'][:256]), np.asarray(plain['embed'][:256]))
  if not tie:
    np.testing.assert_allclose(np.asarray(scaled['lm_head'][:, 256:]), 30.0 * np.asarray(plain['lm_head'][:, 256:]),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(scaled['lm_head'][:, :256]), np.asarray(plain['lm_head'][:, :256]))
  others = [k for k in grown if k not in ('embed', 'lm_head')]
  assert others and all(jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), scaled[k], plain[k]))
                        for k in others)
  section.new_token_lr_scale = 1.0
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), first_update(section, (256, 260)), plain))
