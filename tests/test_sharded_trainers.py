"""SFT and RL on a (data, fsdp, tensor) = (2, 2, 2) mesh of the 8 fake devices compute what one device does.

Each trainer runs a few steps twice in this process: on all 8 devices, with parameters and Adam
moments split over fsdp and tensor, and on `jax.devices()[:1]` (mesh 1, 1, 1). Float32 with the
'highest' matmul precision (conftest.py): only the order of the sums differs, so the per-step
losses agree to ~1e-4.
"""

import os

import jax
import numpy as np
import pytest

from deliberative.weights import checkpoints
from deliberative import train
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import checkpointing
from deliberative.trainers.metrics import read_metrics
from tests.test_rl import JUDGE_FORMAT, TINY, _random_params, _rl_config, _scripted_policy_params
from tests.train_fixtures import override, tiny_sft_config

SHARDED = {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}
SINGLE = {'mesh.data': 1, 'mesh.fsdp': 1, 'mesh.tensor': 1}
# The tiny models' single kv head cannot split over tensor=2; one layer compiles faster than two.
SHAPE = {'n_kv_heads': 2, 'n_layers': 1}


@pytest.fixture
def saved_shardings(monkeypatch):
  """The shardings of every state a run checkpoints (the live arrays, as the train step left them)."""
  seen = []
  save = checkpointing.Checkpointer.save

  def spy(self, state, *args, **kwargs):
    seen.append(jax.tree.map(lambda x: x.sharding, {'params': state['params'], 'opt_state': state['opt_state']}))
    return save(self, state, *args, **kwargs)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', spy)
  return seen


def _assert_split(shardings: dict, name: str) -> None:
  """Parameter `name` and its Adam first moment are split over the mesh, not replicated."""
  param = shardings['params'][name]
  assert not param.is_fully_replicated, param
  flat = [(jax.tree_util.keystr(path), s) for path, s in jax.tree_util.tree_flatten_with_path(shardings['opt_state'])[0]]
  moments = [s for path, s in flat if '.mu' in path and path.endswith(f"['{name}']")]
  assert len(moments) == 1, [path for path, _ in flat]
  assert not moments[0].is_fully_replicated and moments[0].spec == param.spec, (moments[0], param)


def _metric(workdir: str, key: str) -> dict[int, float]:
  return {m['step']: m[key] for m in read_metrics(workdir) if key in m}


def _run_sharded_and_single(config, tmp_path, saved_shardings) -> tuple[str, str]:
  """The same run on the (2,2,2) mesh, then on one device; checks the first really split its state."""
  sharded, single = str(tmp_path / 'sharded'), str(tmp_path / 'single')
  train.run(config(SHARDED), sharded)
  assert len(saved_shardings) == 1
  _assert_split(saved_shardings[0], 'embed')
  train.run(config(SINGLE), single, devices=jax.devices()[:1])
  assert saved_shardings[1]['params']['embed'].mesh.size == 1
  return sharded, single


@pytest.mark.slow
def test_sft_on_a_2x2x2_mesh_matches_one_device(tmp_path, demo_data_dir, saved_shardings):
  def config(mesh):
    return tiny_sft_config(demo_data_dir, total_steps=3, **mesh, **{
        **{f'model.{k}': v for k, v in SHAPE.items()}, 'checkpoint.every_steps': 3, 'evals.every_steps': 3,
        'evals.num_generations': 4, 'evals.batch_size': 4, 'evals.max_new_tokens': 4})
  sharded, single = _run_sharded_and_single(config, tmp_path, saved_shardings)
  a, b = _metric(sharded, 'train/loss'), _metric(single, 'train/loss')
  assert sorted(a) == sorted(b) == [1, 2, 3]
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-4)
  np.testing.assert_allclose(_metric(sharded, 'eval/loss')[3], _metric(single, 'eval/loss')[3], rtol=1e-4)


@pytest.fixture(scope='module')
def shape_checkpoints(tmp_path_factory):
  """test_rl's scripted policy and random judge, in SHAPE."""
  d = tmp_path_factory.mktemp('rl_shape')
  cfg = ModelConfig(**{**TINY, **SHAPE})
  policy, judge = str(d / 'sft'), str(d / 'judge')
  checkpoints.save_params(os.path.join(policy, 'checkpoints'), 0, _scripted_policy_params(cfg, Tokenizer.load()),
                          {'model': cfg.to_dict()})
  checkpoints.save_params(os.path.join(judge, 'checkpoints'), 0, _random_params(cfg, seed=5),
                          {'model': cfg.to_dict(), 'trainer': 'judge', 'spec_version': Spec.load().version,
                           'judge_format': JUDGE_FORMAT})
  return policy, judge


@pytest.mark.slow
def test_rl_on_a_2x2x2_mesh_matches_one_device(tmp_path, demo_data_dir, shape_checkpoints, saved_shardings):
  def config(mesh):
    return override(_rl_config(demo_data_dir, *shape_checkpoints), **mesh, **{
        'checkpoint.every_steps': 2, 'evals.num_prompts': 4, 'evals.batch_size': 4})
  sharded, single = _run_sharded_and_single(config, tmp_path, saved_shardings)
  for key in ('train/loss', 'rl/pg_loss', 'rl/reward', 'rl/kl', 'rl/entropy'):
    a, b = _metric(sharded, key), _metric(single, key)
    assert sorted(a) == sorted(b) == [1, 2], key
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-4, atol=1e-6, err_msg=key)
  assert _metric(sharded, 'rl/kl')[2] > 0  # the first update moved the policy: step 2 tests it
