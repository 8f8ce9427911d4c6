"""The demo judge: a reward model trained by SFT to grade final answers against the spec.

  python -m deliberative.train --config configs/judge.py --workdir runs/judge

Trains the `tiny` model on the demo's graded answers (`judge_train`: good answers and
realistic bad ones), then scores held-out `judge_eval` records with the spec-prefix KV
cache. summary.json holds `eval/judge_accuracy` and `eval/judge_auc` (overall and per
category). configs/rl.py reads the result from runs/judge.

Arguments (`configs/judge.py:size=small,smoke`): `size` (a model preset; `smollm2` fine-tunes the
installed SmolLM2-135M-Instruct GGUF as the judge, in its own chat format), `smoke`.
`sweep(add)` below is the reward-model sweep (model size, learning rate, rubric wording,
answer-only vs answer+CoT input); `python launch/sweep.py --config configs/judge.py` runs it.
"""

import ml_collections

from deliberative import config_lib
from deliberative.data import pipeline


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size='tiny', smoke=False)
  c = ml_collections.ConfigDict()
  c.name = 'judge'
  c.trainer = 'judge'
  c.seed = 0
  c.total_steps = 200
  c.batch_size = 8
  c.log_every_steps = 20
  c.init_from = config_lib.init_from_for(arg.size)  # '' = random init
  c.tokenizer = ''  # '' = init_from's own (a real model's), else the packaged sentencepiece model
  c.spec = ''
  c.peak_flops_per_device = 0.0

  c.model = config_lib.model_config(arg.size)
  c.mesh = config_lib.default_mesh_config(arg.size)
  c.data = pipeline.default_config()
  c.data.seq_len = 384  # ~2 judge examples per row with the 'clauses' view (~190 tokens each)

  c.judge = ml_collections.ConfigDict(dict(
      train_split='judge_train', eval_split='judge_eval',
      rubric='brief',  # a key of deliberative.judge.prompt.RUBRICS
      # 'full' = spec(category) as in the paper (~1000 tokens with the rubric); 'category' = that policy's
      # full text (~450); 'clauses' = its clause ids by decision (~60): what a CPU demo can afford.
      spec_view='clauses',
      answer_and_cot=False,  # the paper's rule: the judge sees the final answer only
      use_prefix_cache=True))

  c.optim = ml_collections.ConfigDict(dict(
      lr=2e-3, warmup_steps=30, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
      grad_clip=1.0, accum_steps=1,
      train_layers=0))  # 0 = every block; N = only the top N (configs/sft.py)
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, keep=2, async_save=True))
  c.evals = ml_collections.ConfigDict(dict(every_steps=200, num_examples=400, at_start=True))
  c.debug = ml_collections.ConfigDict(dict(inject_nan_at_step=-1, kill_after_step=-1))

  if arg.smoke:
    c.total_steps = 4
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.evals.every_steps = 4
    c.evals.num_examples = 16
    c.evals.at_start = False
    c.peak_flops_per_device = 1e11
  if arg.size in config_lib.INSTALLED_MODELS:
    c.optim.lr, c.optim.warmup_steps = 1e-4, 0  # a pretrained model: gentle steps from its weights
    if arg.smoke:
      c.total_steps = 2
      c.checkpoint.every_steps = 2
      c.evals.every_steps = 2
      c.evals.num_examples = 8
  return c


def sweep(add):
  """The reward-model sweep: each call is one run's config overrides."""
  for size in ('tiny', 'small'):
    for lr in (1e-3, 2e-3):
      for rubric in ('default', 'brief'):
        for answer_and_cot in (False, True):
          add({'config_arg': f'size={size}', 'optim.lr': lr, 'judge.rubric': rubric,
               'judge.answer_and_cot': answer_and_cot})
