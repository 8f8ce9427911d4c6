"""The jitted programs that run the model trace it under their mesh, so `sharding.constrain`'s
activation constraints reach the compiled program instead of being silently dropped.

Each program is only lowered (no compilation) on the (data, fsdp, tensor) = (2, 2, 2) mesh of the
8 fake devices (conftest.py); the test looks in the StableHLO for the MLP hidden activation's
constraint, `('batch', 'length', 'mlp')` -> rows over data*fsdp and the mlp width over tensor.
Nothing but `constrain` shards a [rows, length, ffn_dim] array over tensor.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from deliberative.model import sharding
from deliberative.trainers import state as state_lib
from tests.train_fixtures import tiny_sft_config

FFN = 96  # an ffn_dim no other dimension of the tiny programs has
SEQ = 16
BATCH = 8


@pytest.fixture(scope='module')
def setup():
  config = tiny_sft_config('unused', **{
      'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2, 'data.seq_len': SEQ, 'batch_size': BATCH,
      'model.n_kv_heads': 2, 'model.n_layers': 1, 'model.ffn_dim': FFN})
  from deliberative.trainers import supervised
  return state_lib.make_setup(config, supervised.model_config(config), 10)


def _mlp_constraints(lowered) -> list[str]:
  """Row counts of the [rows, length, FFN] sharding constraints split (data, fsdp) x - x tensor
  (Shardy's spelling: JAX 0.10 lowers with the Shardy partitioner)."""
  text = lowered.as_text()
  pattern = (r'sdy\.sharding_constraint [^<]*<@\w+, \[\{"data", "fsdp"\}, \{\}, \{"tensor"\}\]> : '
             rf'tensor<(\d+)x\d+x{FFN}xf32>')
  return re.findall(pattern, text)


def _rows(setup, *shape_dtypes):
  return tuple(jax.ShapeDtypeStruct(s, d, sharding=setup.replicated()) for s, d in shape_dtypes)


def test_under_mesh_is_the_function_itself_without_a_mesh():
  def f(x):
    return x
  assert sharding.under_mesh(f, None, sharding.DEFAULT_RULES) is f
  wrapped = sharding.under_mesh(lambda: sharding._CURRENT.get(), jax.make_mesh((1, 1, 1), sharding.MESH_AXES),
                                sharding.DEFAULT_RULES)
  assert wrapped().mesh.shape == {'data': 1, 'fsdp': 1, 'tensor': 1}
  assert sharding._CURRENT.get() is None


def test_sft_train_and_eval_steps_constrain_the_mlp_activation(setup):
  from deliberative.trainers import supervised
  batch = {k: jax.ShapeDtypeStruct((BATCH, SEQ), jnp.float32 if k == 'weights' else jnp.int32,
                                   sharding=setup.batch_sharding()) for k in supervised.BATCH_FIELDS}
  train = supervised.make_train_step(setup, accum_steps=2).lower(setup.abstract_state, batch)
  # Forward and backward of each 4-row microbatch.
  assert _mlp_constraints(train) and set(_mlp_constraints(train)) == {str(BATCH // 2)}
  evaluate = supervised.make_eval_step(setup).lower(setup.abstract_state['params'], batch)
  assert set(_mlp_constraints(evaluate)) == {str(BATCH)}


def test_rl_steps_constrain_the_mlp_activation(setup):
  from deliberative.trainers import rl_objective
  rows, P, T = BATCH, 8, 8
  shapes = {'tokens_BL': ((rows, P + T), jnp.int32), 'positions_BL': ((rows, P + T), jnp.int32),
            'segment_ids_BL': ((rows, P + T), jnp.int32), 'completion_BT': ((rows, T), jnp.int32),
            'mask_BT': ((rows, T), jnp.float32), 'logp_old_BT': ((rows, T), jnp.float32),
            'logp_ref_BT': ((rows, T), jnp.float32), 'advantages_BT': ((rows, T), jnp.float32)}
  shardings = rl_objective.field_shardings(setup, rl_objective.UPDATE_FIELDS)
  batch = {k: jax.ShapeDtypeStruct(*shapes[k], sharding=shardings[k]) for k in rl_objective.UPDATE_FIELDS}
  objective = rl_objective.Objective(temperature=1.0, clip_eps=0.2, kl_coef=0.0)
  update = rl_objective.make_update_step(setup, objective, ppo_epochs=1, n_minibatches=2)
  assert _mlp_constraints(update.lower(setup.abstract_state, batch))
  score = rl_objective.make_score_step(setup, objective, n_minibatches=2)
  params = setup.abstract_state['params']
  assert _mlp_constraints(score.lower(params, params, {k: batch[k] for k in rl_objective.ROLLOUT_FIELDS}))


def test_sampler_constrains_the_mlp_activation(setup):
  from deliberative.inference.sampler import Sampler, SamplingParams
  sampler = Sampler(setup.model_cfg, stop_ids=(0,), length_buckets=(SEQ,), batch_buckets=(BATCH,),
                    batch_multiple=sharding.batch_multiple(setup.mesh, setup.rules), mesh=setup.mesh,
                    # abstract weights: the program converts them itself, as on a TPU
                    rules=setup.rules, keep_decode_params=False)
  key = jax.eval_shape(lambda: jax.random.key(0))
  args = _rows(setup, *[((BATCH, SEQ), jnp.int32)] * 3, ((BATCH,), jnp.int32), (key.shape, key.dtype))
  lowered = sampler._generate.lower(setup.abstract_state['params'], *args, SamplingParams(max_new_tokens=2))
  assert set(_mlp_constraints(lowered)) == {str(BATCH)}  # prefill and each decode step


def test_judge_constrains_the_mlp_activation(setup):
  from deliberative.judge import Judge
  from deliberative.spec import Spec
  from deliberative.tokenizer.sentencepiece import Tokenizer
  tok = Tokenizer.load()
  L = 384
  judge = Judge(setup.model_cfg, tok, Spec.load(), spec_view='clauses', max_len=L, batch_buckets=(BATCH,),
                length_buckets=(L,),
                batch_multiple=sharding.batch_multiple(setup.mesh, setup.rules), mesh=setup.mesh, rules=setup.rules)
  x, last = _rows(setup, ((BATCH, L), jnp.int32), ((BATCH,), jnp.int32))
  lowered = Judge._full_logprobs.lower(judge, setup.abstract_state['params'], x, x, x, last)
  assert set(_mlp_constraints(lowered)) == {str(BATCH)}
