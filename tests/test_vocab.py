"""Growing the vocabulary for added tokens: old rows untouched, new ones the mean, born sharded."""

import jax
import numpy as np
import pytest

from deliberative.model import loading, sharding, vocab
from deliberative.model.config import ModelConfig

TINY = dict(vocab_size=256, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=64)


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
