"""Graded (prompt, answer) pairs for the judge from the imported prompt sets, split by prompt.

    python tools/import_prompts.py ... --out /tmp/prompts            # docs/data.md has the command
    python tools/build_judge_pairs.py --prompts /tmp/prompts --out /tmp/judge_pairs --max_prompt_chars 1000 \
        [--sample_harmful 2 --max_sampled_prompts 300 --generator PATH]
    python tools/build_dataset.py --jsonl /tmp/judge_pairs --ignore 'judge_pairs_report.*' --name judge_pairs
    python -m deliberative.train --config configs/judge.py:size=smollm2 --config.data.dataset=judge_pairs \
        --config.data.seq_len=1024

Good answers: the compliant answers the sets ship for benign prompts, and the spec-style refusals
and safe completions written for harmful ones; bad answers: the refusals CoCoNot ships for its
benign prompts, and (with --sample_harmful K) the generator's own answers to harmful prompts that
the grader reads as compliance (deliberative/stage1/judge_pairs.py). --generator is stage 1's
generator (configs/generate.py's `base`: an Orbax run, a Hugging Face directory or a GGUF file; ''
= a random-init tiny model, which tests the plumbing only). Writes OUT/judge_train.jsonl,
OUT/judge_eval.jsonl (every pair of a prompt on one side: --heldout_fraction of the prompts; each
file in a seeded shuffle, since the judge evaluates its first records) and
OUT/judge_pairs_report.json (pairs, prompts, good and bad per split, kind and set; samples dropped
and why). A bad input names its file and line.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deliberative.common import cli, io as common_io  # noqa: E402
from deliberative.evals import graders  # noqa: E402
from deliberative.spec import Spec  # noqa: E402
from deliberative.stage1 import judge_pairs, label_input  # noqa: E402

REPORT = 'judge_pairs_report.json'


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--prompts', required=True, help="tools/import_prompts.py's --out folder (or one of its files)")
  parser.add_argument('--out', required=True, help='folder for judge_train.jsonl, judge_eval.jsonl and the report')
  parser.add_argument('--heldout_fraction', type=float, default=0.2, help='share of prompts held out (default 0.2)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--spec', default='', help='the spec file (default: packaged)')
  parser.add_argument('--grader', default='demo_regex', help='reads sampled answers as compliance (evals/graders.py)')
  parser.add_argument('--sample_harmful', type=int, default=0, metavar='K',
                      help='generator answers per harmful prompt, kept as bad when read as compliance (0 = none)')
  parser.add_argument('--max_sampled_prompts', type=int, default=0,
                      help='harmful prompts to sample for, a seeded spread over the sets (0 = all)')
  parser.add_argument('--generator', default='', help="the generator's checkpoint ('' = random-init tiny)")
  parser.add_argument('--max_new_tokens', type=int, default=256,
                      help='per sampled answer; a longer one is cut back to its last whole sentence (counted)')
  parser.add_argument('--temperature', type=float, default=None,
                      help="sampling temperature (default: configs/generate.py's base.temperature)")
  parser.add_argument('--top_p', type=float, default=None, help="nucleus sampling (default: configs/generate.py's)")
  parser.add_argument('--max_prompt_chars', type=int, default=0,
                      help="leave out (and count) prompts longer than this: the judge's data.seq_len must hold "
                      'spec view + request + answer, and HarmBench contextual prompts run to thousands (0 = keep all)')
  parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
  return parser.parse_args(argv)


def generator_config(args: argparse.Namespace):
  """configs/generate.py:source=labels with the generator flags: the same `base` section stage 1 uses."""
  spec = importlib.util.spec_from_file_location('generate_config', REPO / 'configs' / 'generate.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('source=labels')
  config.prompts.jsonl = args.prompts
  config.spec = args.spec
  config.seed = args.seed
  config.base.checkpoint = args.generator
  config.base.max_new_tokens = args.max_new_tokens
  if args.temperature is not None:
    config.base.temperature = args.temperature
  if args.top_p is not None:
    config.base.top_p = args.top_p
  config.labels.num_samples = max(1, args.sample_harmful)
  config.shards.prompts_per_shard = max(1, 32 // config.labels.num_samples)  # the sampler's batch: 32 rows
  return config


def sampled_ids(records, limit: int, seed: int) -> set[str]:
  harmful = sorted((r['id'] for r in records if r['decision'] != 'comply'),
                   key=lambda i: hashlib.sha256(f'{seed}\0{i}'.encode()).digest())
  return set(harmful[:limit] if limit else harmful)


def _jsonl(rows) -> str:
  return ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)


def run(args: argparse.Namespace) -> int:
  if min(args.sample_harmful, args.max_sampled_prompts, args.max_prompt_chars) < 0:
    raise ValueError('--sample_harmful, --max_sampled_prompts and --max_prompt_chars must be >= 0')
  config = generator_config(args)
  spec = Spec.load(args.spec or None)
  grader = graders.get_grader(args.grader)
  inputs = label_input.read(config.prompts, config.labels, spec)
  generator = None
  if args.sample_harmful:
    from deliberative.stage1 import labels
    generator = labels.make_generator(config)
  to_sample = sampled_ids(inputs.records, args.max_sampled_prompts, args.seed) if args.sample_harmful else set()
  builder = judge_pairs.PairBuilder(spec, grader, seed=args.seed, generator=generator, samples=args.sample_harmful)
  too_long = [r for r in inputs.records if args.max_prompt_chars and len(r['prompt']) > args.max_prompt_chars]
  builder.counts[('any', 'prompt_too_long')] += len(too_long)
  long_ids = {r['id'] for r in too_long}
  if generator is not None:
    builder.presample([r for r in inputs.records if r['id'] in to_sample and r['id'] not in long_ids])
  pairs = [p for r in inputs.records if r['id'] not in long_ids for p in builder.pairs(r, sample=r['id'] in to_sample)]
  train, heldout = judge_pairs.split_by_prompt(pairs, args.heldout_fraction, args.seed)
  # The judge evaluates the first evals.num_examples records: shuffled, they span every set.
  order = random.Random(args.seed)
  order.shuffle(train)
  order.shuffle(heldout)
  built = judge_pairs.report(builder, {'judge_train': train, 'judge_eval': heldout})
  built.update(prompts=args.prompts, records_read=inputs.read, sampled_prompts=len(to_sample),
               sample_harmful=args.sample_harmful, generator=args.generator or '(random-init tiny)' if generator else '',
               heldout_fraction=args.heldout_fraction, seed=args.seed, spec_version=spec.version)
  out = Path(args.out)
  common_io.write_text(out / 'judge_train.jsonl', _jsonl(train))
  common_io.write_text(out / 'judge_eval.jsonl', _jsonl(heldout))
  common_io.write_text(out / REPORT, json.dumps(built, indent=1, ensure_ascii=False) + '\n')
  for name, s in built['splits'].items():
    print(f'{name:<12} pairs {s["pairs"]:>5}  prompts {s["prompts"]:>5}  good {s["good"]:>5}  bad {s["bad"]:>5}  '
          f'{s["per_kind"]}')
  if built['dropped']:
    print(f'dropped: {built["dropped"]}')
  print(f'wrote {out}/judge_train.jsonl, judge_eval.jsonl and {REPORT}\n'
        f"next: python tools/build_dataset.py --jsonl {out} --ignore '{REPORT}' --name judge_pairs")
  return 0


def main(argv=None) -> int:
  return cli.run_guarded(run, parse_args(argv), status=1)


if __name__ == '__main__':
  sys.exit(main())
