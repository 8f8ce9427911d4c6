"""RL update padding on a trained policy's lengths: packed row buckets compared, no model run.

  python tools/rl_packing.py --samples RUN/samples/eval_step_0000010.jsonl [--tokenizer PATH]
       [--buckets 4,8] [--row_rollouts 1,2] [--steps 500] [--prompts_per_step 8] [--group_size 4] [--minibatch_size 16]
       [--max_prompt_len 128] [--max_new_tokens 192]

Reads a policy's answers (an RL run's samples, or an evaluation's samples.jsonl: `prompt`, `cot`,
`answer`, `expected`; the evaluation's memorisation-baseline rows and answers to unlabelled prompts
are skipped and counted), measures each prompt's and completion's length with the run's tokenizer
(RUN/config.json's, or --tokenizer: a Hugging Face directory, tokenizer.json, .model or GGUF file;
the chat format as the sampler lays it out), then replays `--steps` RL steps: each step draws
`prompts_per_step` prompts, each from a label chosen with equal odds (the recipe's RL prompts are
about half and half: 123 refuse, 133 comply), and each prompt's `group_size` completions from the
answers to prompts with that label (a refusal's length is not a compliance's). Greedy held-out
answers stand in for sampled rollouts. Every step's rollouts go through the trainer's own
rl_rollout.pack_rows for each `--buckets` value (rl.pack_buckets) and each `--row_rollouts` value
(rl.pack_row_rollouts: rows of k x (P + T) slots), and through build_rows, the padded layout. Prints, per layout: mean / p90 / max update padding, mean rows, and how many distinct row
counts (compiles) the steps needed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from deliberative.common import errors  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--samples', required=True, help='JSONL of a policy\'s answers (prompt, cot, answer, expected)')
  p.add_argument('--tokenizer', default='',
                 help='the tokenizer (Hugging Face dir, tokenizer.json, .model, GGUF or "default"); default: the one '
                      'of the run whose samples/ holds --samples (RUN/config.json)')
  p.add_argument('--buckets', default='4,8', help='comma-separated rl.pack_buckets values to compare')
  p.add_argument('--row_rollouts', default='1', help='comma-separated rl.pack_row_rollouts values to compare')
  p.add_argument('--steps', type=int, default=500)
  p.add_argument('--prompts_per_step', type=int, default=8)
  p.add_argument('--group_size', type=int, default=4)
  p.add_argument('--minibatch_size', type=int, default=16)
  p.add_argument('--max_prompt_len', type=int, default=128)
  p.add_argument('--max_new_tokens', type=int, default=192)
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  for flag, example in (('buckets', '4,8'), ('row_rollouts', '1,2')):
    text = getattr(args, flag)
    try:
      values = [int(b) for b in text.split(',') if b.strip()]
    except ValueError:
      p.error(f'--{flag} {text}: expected comma-separated integers, e.g. {example}')
    if not values or min(values) < 1:
      p.error(f'--{flag} {text}: each at least 1')
    setattr(args, flag, values)
  for flag in ('steps', 'prompts_per_step', 'max_prompt_len', 'max_new_tokens'):
    if getattr(args, flag) < 1:
      p.error(f'--{flag} {getattr(args, flag)}: at least 1')
  if args.group_size < 2:
    p.error(f'--group_size {args.group_size}: at least 2 (group-centred advantages)')
  rows = args.prompts_per_step * args.group_size
  if args.minibatch_size < 1 or rows % args.minibatch_size:
    p.error(f'--minibatch_size {args.minibatch_size} does not divide prompts_per_step x group_size = {rows}')
  if not os.path.isfile(args.samples):
    p.error(f'--samples {args.samples}: no such file')
  if not args.tokenizer:
    run_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.samples))), 'config.json')
    if not os.path.isfile(run_config):
      p.error(f'--samples {args.samples} is not in a run\'s samples/ folder ({run_config} missing): give --tokenizer')
    args.run_config = run_config
  return args


def tokenizer(args):
  """--tokenizer, else the tokenizer of the run that wrote --samples (as its trainer loaded it)."""
  import ml_collections
  from deliberative.weights import source
  try:
    if args.tokenizer:
      return source.tokenizer_for(args.tokenizer)
    with open(args.run_config, encoding='utf-8') as f:
      return source.run_tokenizer(ml_collections.ConfigDict(json.load(f)))
  except (OSError, ValueError) as e:
    where = f'--tokenizer {args.tokenizer}' if args.tokenizer else f'the tokenizer of {args.run_config}'
    raise SystemExit(f'{where}: {errors.one_line(e)}' + ('' if args.tokenizer else '; give --tokenizer'))


def lengths(path: str, tokenizer, max_prompt_len: int,
            max_new_tokens: int) -> tuple[dict[str, list[tuple[int, int]]], collections.Counter]:
  """((prompt tokens, completion tokens) per answer, grouped by the label's decision; skipped counts)."""
  by_label, skipped = collections.defaultdict(list), collections.Counter()
  with open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        r = json.loads(line)
        prompt, cot, answer, label = r['prompt'], r['cot'] or '', r['answer'] or '', r['expected']
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f'{path}:{n}: not a sample with prompt, cot, answer, expected ({errors.one_line(e)})')
      if r.get('arm', 'model') != 'model':
        skipped[f'arm {r["arm"]}'] += 1
        continue
      if not label:
        skipped['no label'] += 1
        continue
      head, _ = tokenizer.render_chat(prompt, add_generation_prompt=True)
      full, _ = tokenizer.render_chat(prompt, cot=cot, answer=answer)
      if len(head) > max_prompt_len:
        skipped['prompt over --max_prompt_len'] += 1
        continue
      by_label[label].append((len(head), min(len(full) - len(head), max_new_tokens)))
  if not by_label:
    raise SystemExit(f'{path}: no labelled answer of the policy whose prompt fits --max_prompt_len '
                     f'(skipped: {dict(skipped)})')
  return by_label, skipped


def replay(args, by_label) -> dict[str, dict]:
  from deliberative.data.pipeline import PromptBatch
  from deliberative.inference.sampler import SampleOutput
  from deliberative.trainers import rl_rollout
  P, T, G, B = args.max_prompt_len, args.max_new_tokens, args.group_size, args.prompts_per_step
  rows, minibatches = B * G, B * G // args.minibatch_size
  labels = sorted(by_label)
  rng = np.random.default_rng(args.seed)
  import ml_collections
  layouts = {'padded': None}
  for k in args.row_rollouts:
    for b in args.buckets:
      name = f'packed, {b} buckets' + (f', rows of {k} x {P + T}' if k > 1 else '')
      rl = ml_collections.ConfigDict(dict(pack_updates=True, pack_buckets=b, pack_row_rollouts=k))
      layouts[name] = rl_rollout.packed_layout(rl, rows // minibatches, 1, P, T)
  seen = {name: {'padding': [], 'rows': [], 'slots': []} for name in layouts}
  for step in range(args.steps):
    tokens, prompt_lengths = np.zeros((B, P), np.int32), np.zeros(B, np.int32)
    completions = np.zeros(rows, np.int32)
    for i in range(B):
      pool = by_label[labels[rng.integers(len(labels))]]
      prompt_lengths[i] = pool[rng.integers(len(pool))][0]
      tokens[i, P - prompt_lengths[i]:] = 1
      completions[i * G:(i + 1) * G] = [pool[j][1] for j in rng.integers(len(pool), size=G)]
    prompts = PromptBatch(tokens=tokens, positions=np.zeros_like(tokens), segment_ids=(tokens > 0).astype(np.int32),
                          lengths=prompt_lengths, valid=np.ones(B, bool), records=[{}] * B)
    sample = SampleOutput(tokens=(np.arange(T)[None, :] < completions[:, None]).astype(np.int32),
                          logprobs=np.zeros((rows, T), np.float32), lengths=completions,
                          stopped=completions < T)
    valid, advantages = np.ones(rows, bool), np.zeros(rows, np.float32)
    for name, layout in layouts.items():
      if layout is None:
        batch = rl_rollout.build_rows(prompts, G, sample, valid, advantages)
      else:
        batch = rl_rollout.pack_rows(prompts, G, sample, valid, advantages, layout[0], minibatches,
                                     np.random.default_rng([args.seed, step]), row_slots=layout[1])
      seen[name]['padding'].append(rl_rollout.update_padding(batch))
      seen[name]['rows'].append(batch['tokens_BL'].shape[0])
      seen[name]['slots'].append(batch['tokens_BL'].size)
  return seen


def main(argv=None) -> int:
  args = parse_args(argv)
  by_label, skipped = lengths(args.samples, tokenizer(args), args.max_prompt_len, args.max_new_tokens)
  if skipped:
    print('skipped: ' + ', '.join(f'{v} ({k})' for k, v in sorted(skipped.items())))
  for label, pool in sorted(by_label.items()):
    p, c = np.array(pool).T
    print(f'{label}: {len(pool)} answers, prompt {p.mean():.0f} tokens, completion {c.mean():.0f} '
          f'(max {c.max()}) tokens')
  print(f'{args.steps} steps of {args.prompts_per_step} x {args.group_size} rollouts, {args.minibatch_size} per '
        f'minibatch, rows of {args.max_prompt_len} + {args.max_new_tokens} slots')
  print(f'| layout | padding mean | p90 | max | rows mean | slots mean | row counts (compiles) |\n'
        f'|---|---:|---:|---:|---:|---:|---:|')
  for name, s in replay(args, by_label).items():
    pad = np.array(s['padding'])
    print(f'| {name} | {pad.mean():.1%} | {np.percentile(pad, 90):.1%} | {pad.max():.1%} | '
          f'{np.mean(s["rows"]):.1f} | {np.mean(s["slots"]):,.0f} | {len(set(s["rows"]))} |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
