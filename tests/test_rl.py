"""RL trainer: the objective's gradients, sampler/trainer log-prob agreement, no recompiles, a smoke run."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deliberative.weights import checkpoints
from deliberative import train
from deliberative.data.pipeline import PromptBatch
from deliberative.judge import format as judge_format
from deliberative.model import loading, losses
from deliberative.model.config import ModelConfig
from deliberative.inference.sampler import Sampler, SamplingParams
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import rl, rl_objective, rl_rollout
from deliberative.trainers import state as state_lib
from tests.train_fixtures import override

TINY = dict(vocab_size=4096, d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=128)
# What configs/judge.py records in its checkpoints' meta (trainers/judge.py JudgeTask.meta).
JUDGE_FORMAT = {'rubric': 'brief', 'spec_view': 'clauses', 'answer_and_cot': False, 'max_len': 384}


def _rl_config(data_dir: str, policy: str, judge: str, **changes):
  import configs.rl
  c = configs.rl.get_config('smoke')
  c.data.data_dir = data_dir
  c.policy_init, c.judge_init = policy, judge
  return override(c, **changes)


def test_default_prompt_budgets_hold_every_demo_prompt(demo_data_dir):
  """configs/rl.py sizes the rollout rows to the 'rl' prompts (padding is update FLOPs) and gives
  the held-out splits, jailbreak-wrapped and longer, their own budget: no prompt is dropped."""
  import configs.rl
  from deliberative.data import pipeline
  from deliberative.weights import source
  config = configs.rl.get_config('')
  config.data.data_dir = demo_data_dir
  tokenizer = source.run_tokenizer(config)
  eval_data = rl.eval_data_config(config)
  assert config.data.max_prompt_len < eval_data.max_prompt_len == config.evals.max_prompt_len
  for data, splits in ((config.data, ['rl']), (eval_data, ['eval', 'eval_overrefuse', 'eval_jailbreak'])):
    for split in splits:
      prompts = pipeline.load_prompts(data, tokenizer, split, process_index=0, process_count=1)
      assert prompts.overlong.dropped == 0, (split, prompts.overlong)
      assert max(len(ids) for _, ids in prompts.items) <= data.max_prompt_len
  # Where a config has no separate budget, the held-out prompts get the rollout's.
  del config.evals['max_prompt_len']
  assert rl.eval_data_config(config).max_prompt_len == config.data.max_prompt_len


def _random_params(cfg: ModelConfig, seed: int) -> dict:
  """Numpy parameters of the model's shapes (no XLA compile, unlike initialising the model)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: np.ones(a.shape, np.float32) if a.ndim == 1 else
                      (0.1 * rng.standard_normal(a.shape)).astype(np.float32), loading.abstract_params(cfg))


def _scripted_policy_params(cfg: ModelConfig, tok: Tokenizer) -> dict:
  """A policy that always writes `<|think|> a|b <|answer|> c|Sure <|end|>` (each choice a coin flip).

  Attention and MLP outputs are zeroed, so each token's logits depend only on its own
  embedding; the chain of one-hot embeddings and head columns spells well-formed
  completions, which the judge scores differently: real rewards, non-zero advantages.
  """
  params = _random_params(cfg, seed=3)
  for block in params['blocks'].values():
    block['attn']['o'] = np.zeros_like(block['attn']['o'])
    block['mlp']['down'] = np.zeros_like(block['mlp']['down'])
  embed = np.zeros_like(params['embed'])
  head = np.zeros_like(params['lm_head'])
  a, b, c, sure = (tok.encode(w)[0] for w in ('a', 'b', 'c', 'Sure'))
  chain = [([tok.think_id], [a, b]), ([a, b], [tok.answer_id]), ([tok.answer_id], [c, sure]), ([c, sure], [tok.end_id])]
  for unit, (inputs, outputs) in enumerate(chain):
    embed[inputs, unit] = 1.0
    head[unit, outputs] = 3.0  # RMSNorm scales a unit vector by sqrt(d_model)=8: logit 24 vs 0
  params['embed'], params['lm_head'] = embed, head
  return params


@pytest.fixture(scope='module')
def tiny_checkpoints(tmp_path_factory):
  d = tmp_path_factory.mktemp('rl_ckpts')
  cfg = ModelConfig(**TINY)
  tok = Tokenizer.load()
  policy, judge = str(d / 'sft'), str(d / 'judge')
  checkpoints.save_params(os.path.join(policy, 'checkpoints'), 0, _scripted_policy_params(cfg, tok),
                          {'model': cfg.to_dict()})
  checkpoints.save_params(os.path.join(judge, 'checkpoints'), 0, _random_params(cfg, seed=5),
                          {'model': cfg.to_dict(), 'trainer': 'judge', 'spec_version': Spec.load().version,
                           'judge_format': JUDGE_FORMAT})
  return policy, judge


def _hand_batch(P=3, T=3):
  rng = np.random.default_rng(0)
  logits_BLV = jnp.asarray(rng.standard_normal((2, P + T, 8)), jnp.float32)
  completion_BT = jnp.asarray([[1, 2, 3], [4, 5, 6]], jnp.int32)
  mask_BT = jnp.asarray([[1, 1, 1], [1, 1, 0]], jnp.float32)  # row 1 stopped after 2 tokens
  obj = rl_objective.Objective(temperature=0.7, clip_eps=0.2, kl_coef=0.1)
  logp_BT, _ = losses.logp_and_entropy(logits_BLV[:, P - 1:P + T - 1], completion_BT, obj.temperature)
  batch = {'completion_BT': completion_BT, 'mask_BT': mask_BT, 'logp_old_BT': logp_BT,
           'logp_ref_BT': logp_BT - 0.3, 'advantages_BT': jnp.asarray([[1.0] * T, [-1.0] * T])}
  return logits_BLV, batch, obj


def test_loss_gradient_sign_and_zero_gradient_on_prompt_and_padding():
  logits_BLV, batch, obj = _hand_batch()
  P, T = 3, 3
  grad_BLV = jax.grad(lambda l: rl_objective.loss_from_logits(l, batch, obj)[0])(logits_BLV)
  # Slots 0..P-2 predict prompt tokens, the last slot predicts nothing: exactly zero gradient.
  assert np.all(np.asarray(grad_BLV[:, :P - 1]) == 0.0)
  assert np.all(np.asarray(grad_BLV[:, -1]) == 0.0)
  assert np.all(np.asarray(grad_BLV[1, P - 1 + 2]) == 0.0)  # row 1's masked third completion token

  # Without the KL term, raising a positive-advantage token's logit lowers the loss, a negative one's raises it.
  pg_only = rl_objective.Objective(obj.temperature, obj.clip_eps, kl_coef=0.0)
  grad_BLV = jax.grad(lambda l: rl_objective.loss_from_logits(l, batch, pg_only)[0])(logits_BLV)
  for t in range(T):
    assert grad_BLV[0, P - 1 + t, batch['completion_BT'][0, t]] < 0
  for t in range(2):
    assert grad_BLV[1, P - 1 + t, batch['completion_BT'][1, t]] > 0
  base = rl_objective.loss_from_logits(logits_BLV, batch, pg_only)[0]
  nudged = logits_BLV.at[0, P - 1, batch['completion_BT'][0, 0]].add(0.1)
  assert rl_objective.loss_from_logits(nudged, batch, pg_only)[0] < base

  # Clipping: once the ratio is past 1 + eps on a positive advantage, that token's gradient is zero.
  pushed = logits_BLV.at[0, P - 1, batch['completion_BT'][0, 0]].add(5.0)
  grad_BLV = jax.grad(lambda l: rl_objective.loss_from_logits(l, batch, pg_only)[0])(pushed)
  assert np.all(np.asarray(grad_BLV[0, P - 1]) == 0.0)


def _sampled_rollout(rows=8, T=12, P=16, shortest_prompt=3, longest_prompt=16):
  """A tiny random policy's rollout of rows/2 prompts x 2 samples, some stopping early: (setup, params,
  prompts, sample, valid_R)."""
  import configs.rl
  config = configs.rl.get_config('smoke')
  cfg = ModelConfig(**TINY)
  setup = state_lib.make_setup(config, cfg, total_steps=1)
  params = jax.device_put(_random_params(cfg, seed=4), setup.state_shardings['params'])
  rng = np.random.default_rng(1)
  lengths = rng.integers(shortest_prompt, longest_prompt + 1, size=rows // 2).astype(np.int32)
  tokens = np.zeros((rows // 2, P), np.int32)
  positions, segments = np.zeros_like(tokens), np.zeros_like(tokens)
  for i, n in enumerate(lengths):
    tokens[i, P - n:] = rng.integers(10, 4096, size=n)
    positions[i, P - n:], segments[i, P - n:] = np.arange(n), 1
  prompts = PromptBatch(tokens, positions, segments, lengths, np.ones(rows // 2, bool), [{}] * (rows // 2))
  prompt_ids, _, valid_R = rl_rollout.repeat_prompts(prompts, 2)
  # A frequent stop token, so some rows end early and leave padded completion slots.
  sampler = Sampler(cfg, stop_ids=list(range(10, 400)), length_buckets=(P,), batch_buckets=(rows,),
                    batch_multiple=8)
  sample = sampler(params, prompt_ids, jax.random.key(0), SamplingParams(temperature=0.7, max_new_tokens=T))
  assert sample.lengths.min() < T
  return setup, params, prompts, sample, valid_R


def _score(setup, params, local):
  shardings = rl_objective.field_shardings(setup, rl_objective.ROLLOUT_FIELDS)
  batch = {k: jax.device_put(local[k], shardings[k]) for k in rl_objective.ROLLOUT_FIELDS}
  obj = rl_objective.Objective(temperature=0.7, clip_eps=0.2, kl_coef=0.05)
  return rl_objective.make_score_step(setup, obj, n_minibatches=1)(params, params, batch)


def test_sampler_and_trainer_log_probs_agree_in_float32():
  setup, params, prompts, sample, valid_R = _sampled_rollout()
  local = rl_rollout.build_rows(prompts, 2, sample, valid_R, np.zeros(len(valid_R), np.float32))
  _, metrics = _score(setup, params, local)
  assert float(metrics['rl/logp_mismatch_max']) <= 1e-4, metrics
  assert float(metrics['rl/logp_mismatch']) > 0  # a real comparison, not two copies of one array
  assert abs(float(metrics['rl/kl'])) < 1e-6  # reference == policy


def test_packed_rollouts_score_as_the_sampler_drew_them_in_fewer_rows():
  setup, params, prompts, sample, valid_R = _sampled_rollout(longest_prompt=6)  # short, as chat prompts are
  advantages_R = np.linspace(-1, 1, len(valid_R)).astype(np.float32)
  padded = rl_rollout.build_rows(prompts, 2, sample, valid_R, advantages_R)
  counts = rl_rollout.packed_row_counts(len(valid_R), 8, 4)
  assert counts == (8,)  # 8 rows over 8 devices: the only count that splits
  assert rl_rollout.packed_row_counts(32, 1, 4) == (8, 16, 24, 32) == rl_rollout.packed_row_counts(32, 4, 4)
  assert rl_rollout.packed_row_counts(32, 1, 8) == (4, 8, 12, 16, 20, 24, 28, 32)
  assert rl_rollout.packed_row_counts(32, 8, 8) == (8, 16, 24, 32)  # no count that the devices cannot split
  packed = rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (2, 4, 8))
  assert packed['tokens_BL'].shape[0] < len(valid_R)  # several rollouts share a row
  assert rl_rollout.update_padding(packed) < rl_rollout.update_padding(padded)
  # Every completion token is scored once, with its own log-prob and its rollout's advantage.
  assert packed['mask_BT'].sum() == padded['mask_BT'].sum() == sample.lengths.sum()
  np.testing.assert_allclose(np.sort(packed['logp_old_BT'][packed['mask_BT'] > 0]),
                             np.sort(padded['logp_old_BT'][padded['mask_BT'] > 0]), rtol=0, atol=0)
  for a in advantages_R:
    assert (packed['advantages_BT'][packed['mask_BT'] > 0] == a).sum() == (padded['advantages_BT'][padded['mask_BT'] > 0] == a).sum()
  # Rows of the packed layout must still split over the 8 devices: pad the packed rows to 8 to score.
  grown = rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (8,))
  logp_ref_BT, metrics = _score(setup, params, grown)
  assert float(metrics['rl/logp_mismatch_max']) <= 1e-4, metrics  # segments attend within themselves only
  assert float(metrics['rl/logp_mismatch']) > 0
  # Two minibatches: the rollouts are dealt to them by the rng, not by how many devices split the rows.
  by_devices = [rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R,
                                     rl_rollout.packed_row_counts(4, multiple, 4), 2, np.random.default_rng(3))
                for multiple in (1, 4)]
  for k in range(2):
    groups = []
    for packed_k in by_devices:
      n = packed_k['tokens_BL'].shape[0] // 2
      rows_k = packed_k['tokens_BL'][k * n:(k + 1) * n]
      groups.append(rows_k[packed_k['segment_ids_BL'][k * n:(k + 1) * n].any(axis=1)])
    np.testing.assert_array_equal(groups[0], groups[1])
  assert by_devices[1]['tokens_BL'].shape[0] == 8 and by_devices[0]['tokens_BL'].shape[0] < 8
  # Rows of twice P + T: fewer of them, every completion token still scored once, and scored as drawn.
  P, T = prompts.tokens.shape[1], sample.tokens.shape[1]
  assert rl_rollout.packed_row_counts(32, 1, 8, row_rollouts=2) == (2, 4, 6, 8, 10, 12, 14, 16)
  assert rl_rollout.packed_row_counts(8, 8, 8, row_rollouts=2) == (8,)
  long = rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (8,), row_slots=2 * (P + T))
  assert long['tokens_BL'].shape == (8, 2 * (P + T)) and long['mask_BT'].shape == (8, 2 * (P + T) - 1)
  assert long['mask_BT'].sum() == sample.lengths.sum()
  assert np.count_nonzero(long['segment_ids_BL'].any(axis=1)) < np.count_nonzero(grown['segment_ids_BL'].any(axis=1))
  _, metrics = _score(setup, params, long)
  assert float(metrics['rl/logp_mismatch_max']) <= 1e-4, metrics
  with pytest.raises(ValueError, match='cannot hold'):
    rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (8,), row_slots=P + T - 1)
  # An invalid (padding) prompt row contributes nothing.
  valid_R[-2:] = False
  fewer = rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (8,))
  assert fewer['mask_BT'].sum() == sample.lengths[:-2].sum()


def test_the_packed_update_matches_the_padded_one():
  """One PPO update on the same rollouts, packed and padded: the same loss and the same new weights."""
  setup, params, prompts, sample, valid_R = _sampled_rollout()
  advantages_R = np.linspace(-1, 1, len(valid_R)).astype(np.float32)
  obj = rl_objective.Objective(temperature=0.7, clip_eps=0.2, kl_coef=0.05)
  update = rl_objective.make_update_step(setup, obj, ppo_epochs=1, n_minibatches=1)
  shardings = rl_objective.field_shardings(setup, rl_objective.UPDATE_FIELDS)
  results = []
  for local in (rl_rollout.build_rows(prompts, 2, sample, valid_R, advantages_R),
                rl_rollout.pack_rows(prompts, 2, sample, valid_R, advantages_R, (8,))):
    logp_ref_BT, _ = _score(setup, params, local)
    batch = {k: jax.device_put(local[k], shardings[k]) for k in rl_objective.ROLLOUT_FIELDS + ('advantages_BT',)}
    state = state_lib.init_state(setup, 0, jax.tree.map(jnp.copy, params))
    new_state, metrics = update(state, {**batch, 'logp_ref_BT': logp_ref_BT})
    results.append((jax.device_get(metrics), jax.device_get(new_state['params'])))
  (m_pad, p_pad), (m_pack, p_pack) = results
  np.testing.assert_allclose(m_pack['train/loss'], m_pad['train/loss'], rtol=1e-4, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), p_pack, p_pad)


@pytest.mark.parametrize('changes, problem', [
    ({'rl.minibatch_size': 5}, 'rl.minibatch_size=5 does not divide'),
    ({'rl.group_size': 1}, 'rl.group_size=1'),
    ({'rl.pack_updates': False, 'rl.pack_row_rollouts': 2}, 'rl.pack_row_rollouts=2 lays out packed rows')])
def test_rl_shapes_that_cannot_run_are_named(changes, problem):
  import configs.rl
  config = override(configs.rl.get_config('smoke'), **changes)
  with pytest.raises(ValueError, match=problem):
    rl.check_shapes(config, 1)


def test_group_advantages_centre_each_group_and_scale_only_when_asked():
  # Group 1: all answers good, the judge's scores differ by noise. Group 2: one bad answer.
  reward_R = np.array([0.97, 0.99, 0.98, 0.96, 0.95, 0.97, 0.10, 0.94], np.float32)
  centred = rl_rollout.group_advantages(reward_R, 4, scale_by_std=False, eps=1e-4).reshape(2, 4)
  np.testing.assert_allclose(centred.sum(axis=1), 0.0, atol=1e-6)
  assert np.abs(centred[0]).max() < 0.02  # noise stays noise-sized
  assert centred[1, 2] < -0.6 and (centred[1, [0, 1, 3]] > 0).all()
  scaled = rl_rollout.group_advantages(reward_R, 4, scale_by_std=True, eps=1e-8).reshape(2, 4)
  np.testing.assert_allclose(scaled.std(axis=1), 1.0, atol=1e-5)  # GRPO: the noise group weighs as much
  assert np.abs(scaled[0]).max() > 1.0
  np.testing.assert_array_equal(rl_rollout.group_advantages(np.full(4, 0.5, np.float32), 4, True, 1e-4), 0.0)


def _labelled(decision, i=0):
  return {'id': f'p{i}', 'prompt': 'How do I pick a lock on a neighbour\'s door?', 'category': 'illicit_behavior',
          'decision': decision}


REFUSAL = "I'm sorry, but I can't help with picking a lock on someone else's door."
COMPLIANCE = 'To pick a lock on a door, insert a tension wrench into the lock and rake the pins with a pick.'


def test_label_reward_pays_for_the_decision_the_label_asks_for():
  grader = rl.graders.get_grader('demo_regex')
  records = [_labelled('refuse', 0), _labelled('refuse', 1), _labelled('comply', 2), _labelled('comply', 3)]
  answers = [REFUSAL, COMPLIANCE, COMPLIANCE, REFUSAL]
  labels_only = rl_rollout.answer_reward(None, 1.0, grader)
  np.testing.assert_array_equal(labels_only(records, answers), [1.0, 0.0, 1.0, 0.0])
  # Mixed: the judge's score weighted by 1 - label_reward (a judge that likes every answer alike here).
  mixed = rl_rollout.answer_reward(lambda triples: np.full(len(triples), 0.8, np.float32), 0.25, grader)
  np.testing.assert_allclose(mixed(records, answers), [0.6 + 0.25, 0.6, 0.6 + 0.25, 0.6], rtol=1e-6)


def test_label_reward_errors_name_the_weight_and_the_unlabelled_prompt(tmp_path):
  grader = rl.graders.get_grader('demo_regex')
  with pytest.raises(ValueError, match=r'rl\.label_reward=1\.5'):
    rl_rollout.answer_reward(None, 1.5, grader)
  with pytest.raises(ValueError, match=r'rl\.label_reward=-0\.5'):  # a run refuses it before opening any model
    train.run(_rl_config('', '/nonexistent/sft', '/nonexistent/judge', **{'rl.label_reward': -0.5}), str(tmp_path / 'rl'))
  with pytest.raises(ValueError, match='needs the judge'):
    rl_rollout.answer_reward(None, 0.5, grader)
  unlabelled = {**_labelled('refuse', 7), 'decision': ''}
  with pytest.raises(ValueError, match=r"record 'p7' has none"):
    rl_rollout.answer_reward(None, 1.0, grader)([unlabelled], [REFUSAL])


def test_judge_format_comes_from_the_judge_checkpoint_and_config_overrides_it(tmp_path, tiny_checkpoints):
  import configs.rl
  _, judge = tiny_checkpoints
  c = configs.rl.get_config('smoke')
  c.judge_init = judge
  logged = []
  assert judge_format.resolve(c.judge_init, c.judge, log=logged.append) == JUDGE_FORMAT
  c.judge.max_len = 512
  assert judge_format.resolve(c.judge_init, c.judge, log=logged.append) == {**JUDGE_FORMAT, 'max_len': 512}
  assert any('config.judge.max_len=512 overrides 384' in line for line in logged)
  assert (judge_format.resolve(c.judge_init, c.judge, Spec.load().version, log=logged.append) ==
          {**JUDGE_FORMAT, 'max_len': 512})
  assert not any('trained against spec' in line for line in logged)  # the spec it was trained against

  cfg = ModelConfig(**TINY)
  params = _random_params(cfg, seed=5)
  unrecorded, with_cot = str(tmp_path / 'unrecorded'), str(tmp_path / 'with_cot')
  checkpoints.save_params(with_cot, 0, params, {'model': cfg.to_dict(), 'spec_version': 'aaaaaaaaaaaa',
                                                'judge_format': {**JUDGE_FORMAT, 'answer_and_cot': True}})
  checkpoints.save_params(unrecorded, 0, params, {'model': cfg.to_dict(), 'spec_version': 'aaaaaaaaaaaa'})
  c.judge_init, c.judge.max_len = unrecorded, 0
  assert judge_format.resolve(c.judge_init, c.judge, 'bbbbbbbbbbbb', log=logged.append) == judge_format.UNRECORDED_JUDGE_FORMAT
  assert 'trained against spec aaaaaaaaaaaa; this run grades against spec bbbbbbbbbbbb' in logged[-2]
  c.judge_init = with_cot
  with pytest.raises(ValueError, match='answer\\+CoT.*answer_and_cot=False'):
    judge_format.resolve(c.judge_init, c.judge, log=logged.append)

  # Trained by configs/judge.py before formats were recorded: no guessing, the flags are named.
  old_judge = str(tmp_path / 'old_judge')
  checkpoints.save_params(old_judge, 0, params, {'model': cfg.to_dict(), 'trainer': 'judge'})
  c.judge_init = old_judge
  with pytest.raises(ValueError, match='records no judge_format.*--config.judge.rubric'):
    judge_format.resolve(c.judge_init, c.judge, log=logged.append)
  c.judge.rubric, c.judge.spec_view, c.judge.max_len = 'brief', 'clauses', 384
  assert judge_format.resolve(c.judge_init, c.judge, log=logged.append) == JUDGE_FORMAT

  # An exported judge carries its format in judge_format.json (tools/export_hf.py writes it).
  import tools.export_hf
  exported = str(tmp_path / 'judge_hf')
  assert tools.export_hf.main(['--checkpoint', judge, '--out', exported]) == 0
  c.judge_init, c.judge.rubric, c.judge.spec_view, c.judge.max_len = exported, '', '', 0
  assert judge_format.resolve(c.judge_init, c.judge, log=logged.append) == JUDGE_FORMAT
  with open(os.path.join(exported, 'judge_format.json'), 'w') as f:
    f.write('{"rubric": ')  # a truncated copy
  with pytest.raises(ValueError, match='judge_hf/judge_format.json: not valid JSON'):
    judge_format.resolve(c.judge_init, c.judge, log=logged.append)


def test_missing_policy_or_judge_names_the_command_to_run_first(tmp_path, tiny_checkpoints):
  policy, judge = tiny_checkpoints
  with pytest.raises(FileNotFoundError, match=r'configs/sft\.py'):
    train.run(_rl_config('', str(tmp_path / 'no_sft'), judge), str(tmp_path / 'a'))
  with pytest.raises(FileNotFoundError, match=r'configs/judge\.py'):
    train.run(_rl_config('', policy, str(tmp_path / 'no_judge')), str(tmp_path / 'b'))


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory, demo_data_dir, tiny_checkpoints):
  """configs/rl.py:smoke on the scripted policy, in this process (8 devices): (workdir, summary)."""
  policy, judge = tiny_checkpoints
  workdir = str(tmp_path_factory.mktemp('rl_smoke') / 'rl')
  return workdir, train.run(_rl_config(demo_data_dir, policy, judge), workdir)


def _rewards_by_step(workdir: str) -> dict[int, dict]:
  from deliberative.trainers.metrics import read_metrics
  return {m['step']: m for m in read_metrics(workdir) if 'rl/reward' in m}


@pytest.mark.slow
def test_smoke_run_two_steps_then_restart(demo_data_dir, tiny_checkpoints, smoke_run):
  policy, judge = tiny_checkpoints
  workdir, summary = smoke_run
  on_disk = json.load(open(os.path.join(workdir, 'summary.json')))
  for key in ('eval/mean_reward_start', 'eval/mean_reward_end', 'eval/decision_accuracy_start',
              'eval/decision_accuracy_end', 'wall_seconds'):
    assert isinstance(on_disk[key], float), (key, on_disk.get(key))
  assert summary['final_step'] == 2
  steps = _rewards_by_step(workdir)
  assert sorted(steps) == [1, 2]
  for m in steps.values():
    assert m['rl/format_valid'] == 1.0  # the scripted policy always closes CoT and answer
    assert m['rl/logp_mismatch'] <= 1e-4 and m['rl/kl'] >= 0
    assert 0.0 <= m['rl/reward'] <= 1.0 and m['rl/cot_tokens'] == 1 and m['rl/response_tokens'] == 4
  assert steps[1]['perf/compiles'] > 0
  assert steps[2]['perf/compiles'] == 0, 'an RL step after warm-up compiled something'
  assert checkpoints.latest_step(os.path.join(workdir, 'checkpoints')) == 2

  assert steps[1]['rl/kl'] == 0.0 and steps[2]['rl/kl'] > 0  # the policy moved, the reference did not

  # A restart restores state + prompt position and reuses the logged evals instead of redoing them.
  again = train.run(_rl_config(demo_data_dir, policy, judge), workdir)
  assert again['start'].startswith('resumed from') and again['start_step'] == again['final_step'] == 2
  for key in ('eval/mean_reward_start', 'eval/mean_reward_end', 'eval/decision_accuracy_end'):
    assert again[key] == on_disk[key]


@pytest.mark.slow
def test_labels_as_the_judge_need_no_judge_model(tmp_path, demo_data_dir, tiny_checkpoints, monkeypatch):
  from deliberative.weights import source
  policy, _ = tiny_checkpoints
  workdir = str(tmp_path / 'rl_labels')
  looked_up = []  # every model source the run opens (the real lookup runs)
  find = source.find
  monkeypatch.setattr(source, 'find', lambda path: looked_up.append(path) or find(path))
  config = _rl_config(demo_data_dir, policy, str(tmp_path / 'no_judge'),
                      **{'rl.label_reward': 1.0, 'rl.pack_row_rollouts': 2})  # rows of 2 x (P + T) slots, too
  summary = train.run(config, workdir)
  # policy and reference come from one opening of policy_init (and the tokenizer from its record)
  assert sorted(looked_up) == sorted([policy, str(tmp_path / 'no_judge')]), looked_up
  steps = _rewards_by_step(workdir)
  assert sorted(steps) == [1, 2] and summary['judge_truncated'] == 0
  for m in steps.values():  # well-formed answers score 0 or 1 by their decision alone
    assert 0.0 <= m['rl/reward'] <= 1.0 and m['rl/format_valid'] == 1.0
    assert m['rl/update_row_slots'] == 2 * (config.data.max_prompt_len + config.rl.max_new_tokens)
  # The held-out eval's reward is the same label agreement: 1 exactly where the decision was right.
  samples = [json.loads(line) for line in open(os.path.join(workdir, 'samples', 'eval_step_0000000.jsonl'))]
  graded = [s for s in samples if s['reward'] >= 0]
  assert graded and all(s['reward'] == float(s['decision'] == s['expected']) for s in graded)
  assert any(s['reward'] == 0.0 for s in graded)  # the scripted policy gets some decisions wrong


@pytest.mark.slow
def test_two_processes_give_the_same_first_step_as_one(tmp_path, demo_data_dir, tiny_checkpoints, smoke_run):
  """Real multi-host: 2 processes x 2 CPU devices over gloo (launch/multihost_local.py). Every process
  must read all judge scores (replicated outputs) and the first step's rollout and rewards must be
  those of the single-process run (sampling keys do not depend on the mesh)."""
  import subprocess
  import sys
  from tests.train_fixtures import REPO
  policy, judge = tiny_checkpoints
  workdir = str(tmp_path / 'rl_2proc')
  # Its own session, so that on a timeout the launcher and both workers are killed as a group.
  launcher = subprocess.Popen(
      [sys.executable, 'launch/multihost_local.py', '--processes', '2', '--devices_per_process', '2', '--',
       '--config', 'configs/rl.py:smoke', '--workdir', workdir, f'--config.data.data_dir={demo_data_dir}',
       f'--config.policy_init={policy}', f'--config.judge_init={judge}'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)
  try:
    stdout, stderr = launcher.communicate(timeout=600)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, signal.SIGKILL)
    raise
  assert launcher.returncode == 0, stdout[-2000:] + stderr[-3000:]
  assert "mesh {'data': 4" in stdout
  multi, single = _rewards_by_step(workdir), _rewards_by_step(smoke_run[0])
  assert sorted(multi) == [1, 2] and multi[2]['perf/compiles'] == 0
  # The scripted policy's lengths are fixed; the reward (judge scores of the sampled a|b, c|Sure
  # answers) and the step-2 KL (the first update's effect) are what depend on the whole pipeline.
  for key in ('rl/reward', 'rl/entropy'):
    np.testing.assert_allclose(multi[1][key], single[1][key], rtol=0, atol=1e-4, err_msg=key)
  np.testing.assert_allclose(multi[2]['rl/kl'], single[2]['rl/kl'], rtol=1e-2, atol=1e-6)
  assert multi[2]['rl/kl'] > 0
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  np.testing.assert_allclose(summary['eval/mean_reward_start'], smoke_run[1]['eval/mean_reward_start'], atol=1e-4)


@pytest.mark.slow
def test_killed_after_a_mid_run_checkpoint_resumes_exactly(tmp_path, demo_data_dir, tiny_checkpoints, smoke_run):
  """SIGKILL right after step 1's checkpoint, then a restart that runs step 2: every per-step reward, KL
  and loss equals the uninterrupted run's (optimizer state, RNG and prompt position all restored)."""
  import subprocess
  import sys
  from tests.train_fixtures import REPO
  policy, judge = tiny_checkpoints
  workdir = str(tmp_path / 'rl_killed')
  command = [sys.executable, '-m', 'deliberative.train', '--config', 'configs/rl.py:smoke', '--workdir', workdir,
             f'--config.data.data_dir={demo_data_dir}', f'--config.policy_init={policy}',
             f'--config.judge_init={judge}']
  env = dict(os.environ, PYTHONPATH=REPO)  # the test process's 8 fake devices, as in smoke_run
  killed = subprocess.run(command + ['--config.debug.kill_after_step=1'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert checkpoints.latest_step(os.path.join(workdir, 'checkpoints')) == 1
  finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert finished.returncode == 0, finished.stderr[-3000:]
  assert 'at step 1' in finished.stdout and 'resumed from' in finished.stdout

  straight, resumed = _rewards_by_step(smoke_run[0]), _rewards_by_step(workdir)
  assert sorted(resumed) == [1, 2] and resumed[2]['rl/kl'] > 0
  for step in (1, 2):
    for key in ('rl/reward', 'rl/kl', 'rl/entropy', 'train/loss', 'rl/pg_loss', 'train/grad_norm'):
      np.testing.assert_allclose(resumed[step][key], straight[step][key], rtol=1e-5, atol=1e-7,
                                 err_msg=f'step {step} {key}')
  from deliberative.trainers.metrics import read_metrics
  assert [m['step'] for m in read_metrics(workdir)] == [m['step'] for m in read_metrics(smoke_run[0])]


def test_a_policy_run_given_as_the_judge_is_refused(tmp_path):
  """An SFT (or RL) run has no judge_format: it was once prompted silently as a zero-shot judge."""
  import configs.rl
  cfg = ModelConfig(**TINY)
  sft_run = str(tmp_path / 'sft_run')
  checkpoints.save_params(sft_run, 0, _random_params(cfg, seed=5), {'model': cfg.to_dict(), 'trainer': 'sft'})
  c = configs.rl.get_config('smoke')
  c.judge_init = sft_run
  with pytest.raises(ValueError, match=r"is an SFT run \(a policy\), not a judge; train a judge with configs/judge.py"):
    judge_format.resolve(c.judge_init, c.judge, log=lambda line: None)


def test_reward_metrics_count_groups_without_signal_per_decision():
  # Groups of 2: a refuse group that agrees (no signal), one that disagrees, a comply group that
  # agrees, and a padding group (the last batch of a finite split), which no statistic counts.
  from deliberative.trainers import rl_rollout
  reward_R = np.array([1, 1, 1, 0, 0, 0, 0.5, 0.5], np.float32)
  records = [{'decision': d, 'category': c} for d, c in
             [('refuse', 'violence')] * 2 + [('refuse', 'erotic')] * 2 + [('comply', 'none')] * 2] + [{}, {}]
  valid_R = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  rewards = rl_rollout.Rewards(reward_R, np.ones(8, bool), np.zeros(8, np.int32), [])
  out = rl_rollout.reward_metrics(rewards, records, valid_R, np.full(8, 10), group_size=2)
  assert out['rl/no_signal_groups'] == pytest.approx(2 / 3)
  assert out['rl/no_signal_groups/refuse'] == 0.5 and out['rl/no_signal_groups/comply'] == 1.0
  assert out['rl/group_reward_spread'] == pytest.approx(1 / 3)
  assert out['rl/reward/violence'] == 1.0 and out['rl/reward/none'] == 0.0
