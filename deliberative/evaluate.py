"""Evaluate a checkpoint on held-out suites, beside the memorisation baseline.

  python -m deliberative.evaluate --checkpoint runs/sft --suite demo --suite demo_overrefuse \
      --suite demo_jailbreak --out runs/sft/eval
  python -m deliberative.evaluate --checkpoint MODEL.gguf --suite xstest=xstest_prompts.csv --limit 100 \
      --out runs/eval_base [--spec_in_context]

`--checkpoint` is any model source (an Orbax run or checkpoint, a Hugging Face directory, a
GGUF file). Each suite's items (evals/suites.py) are answered greedily in the model's own chat
format and graded by the suite's default grader (evals/graders.py); `--grader` replaces it (the first
one named grades the suite, more are graded beside it and their disagreement reported);
the same graders score the memorisation baseline: for each item, the answer of the
nearest training prompt (evals/baseline.py; `--train` names the traces, default the demo's
`train` split). A model that does not reason (no reasoning block: a pretrained instruct
model) is graded on its direct answer; its format and citation rates are 0.

`--spec_in_context` puts spec(category) (the whole spec for items without a category) in
the system prompt: the "spec in context, no training" arm of the ablation grid.

Writes under --out: metrics.json (value, 95% bootstrap interval, n and grader of every
metric, per arm), samples.jsonl (every generation and its grades), report.md (model beside
the baseline) and metrics.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from deliberative.common import cli, errors, run_lock, storage
from deliberative.evals import baseline, generation, graders, metrics, report, suites
from deliberative.inference.policy import LENGTH_BUCKETS, Policy, spec_prompt

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m deliberative.evaluate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', required=True, help='Orbax run/checkpoint, Hugging Face directory or GGUF file')
  p.add_argument('--suite', action='append', required=True,
                 help=f'repeatable: {", ".join(suites.SUITES)} (file suites as NAME=PATH)')
  p.add_argument('--out', required=True, help='output directory (created)')
  p.add_argument('--grader', action='append', default=[],
                 help='repeatable: replaces each suite\'s default grader; the first grades the suite, others are '
                      'graded beside it (demo_regex, xstest_string_match, model:PATH)')
  p.add_argument('--limit', type=int, default=None, help='items per suite (a stratified, deterministic subset)')
  p.add_argument('--suite_limit', action='append', default=[], metavar='NAME=N',
                 help='repeatable: items of suite NAME, in place of --limit (e.g. strongreject=50 beside --limit 100)')
  p.add_argument('--wrapper_limit', type=int, default=None, help='jailbreak wrappers per prompt (strongreject, demo_jailbreak)')
  p.add_argument('--max_new_tokens', type=int, default=256)
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--spec_in_context', action='store_true', help='spec(category) in the system prompt')
  p.add_argument('--reasoning', choices=('auto', 'on', 'off'), default='auto',
                 help='open a reasoning block in the generation prompt; auto: when the model\'s vocabulary holds '
                      'the reasoning marker (a run trained here), not for a pretrained model whose tokenizer added it')
  p.add_argument('--train', default=None,
                 help='training traces for the memorisation baseline: a folder of <split>.jsonl or a built dataset '
                      '(default: the demo dataset)')
  p.add_argument('--train_split', default='train')
  p.add_argument('--no_baseline', action='store_true')
  p.add_argument('--data_dir', default=None, help='where the demo dataset is built ($DELIBERATIVE_DATA_DIR)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--debug', action='store_true', help='full tracebacks')
  args = p.parse_args(argv)
  # Plain mistakes are named before any model loads or any answer is generated.
  for flag in ('max_new_tokens', 'batch_size', 'limit', 'wrapper_limit'):
    value = getattr(args, flag)
    if value is not None and value < 1:
      p.error(f'--{flag} must be >= 1, got {value}')
  args.suite_limits = {}
  for item in args.suite_limit:
    name, sep, value = item.partition('=')
    if not sep or not value.strip().isdigit() or int(value) < 1:
      p.error(f'--suite_limit {item}: expected NAME=N with N >= 1')
    if name not in {s.partition('=')[0].strip() for s in args.suite}:
      p.error(f'--suite_limit {item}: no --suite named {name!r}')
    args.suite_limits[name] = int(value)
  if storage.exists(args.out) and not storage.isdir(args.out):
    p.error(f'--out {args.out} exists and is not a directory')
  for name in args.grader:
    try:
      graders.check_grader_name(name)
    except graders.UnknownGrader as e:
      p.error(f'--grader {name}: {errors.one_line(e)}')
  return args


def log(message: str) -> None:
  print(message, flush=True)


# -- one suite ------------------------------------------------------------------------------------

def grade(records: Sequence[Mapping], completions: Sequence[tuple], spec, grader: str) -> list[dict]:
  return generation.score_completions(records, completions, spec, grader=grader)


def run_suite(suite: suites.Suite, policy: Policy | None, spec, graders: Sequence[str], train_records,
              spec_in_context: bool) -> tuple[dict[str, dict], list[dict], list, list[str]]:
  """(arms' metric values, samples, grader disagreements, notes) for one suite."""
  records = [item.record() for item in suite.items]
  notes = list(suite.notes)
  arms: dict[str, dict] = {}
  samples: list[dict] = []
  disagreements = []
  answered: dict[str, tuple[list, list, list]] = {}  # arm -> (kept items, records, completions)

  if policy is not None:
    kept_items, kept_records, prompts, too_long = [], [], [], []
    for item, record in zip(suite.items, records):
      ids = policy.prompt_ids(record, spec_prompt(spec, item.category) if spec_in_context else None)
      if len(ids) > LENGTH_BUCKETS[-1]:
        too_long.append(item.id)
        continue
      kept_items.append(item), kept_records.append(record), prompts.append(ids)
    if too_long:
      notes.append(f'{suite.name}: {len(too_long)} prompt(s) longer than {LENGTH_BUCKETS[-1]} tokens not asked '
                   f'(e.g. {too_long[0]})')
    completions = []
    start = time.perf_counter()
    for lo in range(0, len(prompts), policy.batch_size):
      out = policy.sample(prompts[lo:lo + policy.batch_size])
      for i in range(len(prompts[lo:lo + policy.batch_size])):
        c = policy.tokenizer.parse_completion(out.completion(i), reasoning=policy.reasoning)
        completions.append((c.cot, c.answer, c.well_formed, c.direct))
      done = min(lo + policy.batch_size, len(prompts))
      rate = done / (time.perf_counter() - start)
      log(f'  {suite.name}: {done}/{len(prompts)} answered  {rate:.2f} prompts/s  ETA {(len(prompts) - done) / rate:.0f}s')
    answered['model'] = (kept_items, kept_records, completions)

  if train_records is not None:
    nn = baseline.memorisation_baseline(train_records, [r['prompt'] for r in records])
    answered[report.BASELINE_ARM] = (list(suite.items), records, [(n['cot'], n['answer'], True, False) for n in nn])

  for arm, (items, arm_records, completions) in answered.items():
    sub = dataclasses.replace(suite, items=items)
    values: dict[str, Any] = {}
    decisions: dict[str, list[str]] = {}
    for g in [suite.default_grader, *[x for x in graders if x != suite.default_grader]]:
      scored = grade(arm_records, completions, spec, g)
      values.update(report.metric_values(sub, scored, scored[0]['grader'] if scored else g))
      decisions[g] = [s['decision'] for s in scored]
      if g == suite.default_grader:
        for record, (cot, answer, *_), s in zip(arm_records, completions, scored):
          samples.append({'arm': arm, 'suite': suite.name, 'id': record['id'], 'prompt': record['prompt'],
                          'category': record.get('category'), 'expected': record.get('decision'),
                          'role': record['role'], 'cot': cot, 'answer': answer, **s})
    if len(decisions) > 1:
      disagreements += metrics.grader_disagreements(suite.name, decisions, arm)
    arms[arm] = values
  return arms, samples, disagreements, notes


# -- main -----------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
  return cli.run_guarded(evaluate, parse_args(argv))


def evaluate(args: argparse.Namespace) -> int:
  from deliberative.spec import Spec
  if storage.abspath(args.out) == storage.abspath(args.checkpoint):
    raise ValueError(f'--out {args.out} is the checkpoint itself; choose a directory of its own')
  start = time.perf_counter()
  loaded = [suites.load_suite(s, limit=args.suite_limits.get(suites.parse_suite_spec(s)[0], args.limit),
                              wrapper_limit=args.wrapper_limit, data_dir=args.data_dir)
            for s in args.suite]  # every file is checked before the model loads
  if args.grader:  # --grader replaces each suite's default: the first named grades it, the rest beside it
    loaded = [dataclasses.replace(suite, default_grader=args.grader[0]) for suite in loaded]
  spec = Spec.load(None)
  train_records = None if args.no_baseline else suites.read_split_records(args.train_split, args.train,
                                                                          data_dir=args.data_dir)
  with run_lock.WorkdirLock(args.out, what='evaluation', note=log):  # one writer per --out
    return _generate_and_grade(args, loaded, spec, train_records, start)


def _generate_and_grade(args, loaded, spec, train_records, start: float) -> int:
  log(f'loading {args.checkpoint}')
  policy = Policy(args.checkpoint, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  reasoning=args.reasoning)
  log(f'  {policy.cfg.param_count():,} parameters; reasoning block in the prompt: {policy.reasoning}')
  arms: dict[str, dict] = {}
  samples, disagreements, notes = [], [], []
  for suite in loaded:
    log(f'{suite.name}: {len(suite.items)} items, grader {suite.default_grader}')
    s_arms, s_samples, s_dis, s_notes = run_suite(suite, policy, spec, args.grader, train_records,
                                                  args.spec_in_context)
    for arm, values in s_arms.items():
      arms.setdefault(arm, {}).update(values)
    samples += s_samples
    disagreements += s_dis
    notes += s_notes
  meta = {'checkpoint': storage.abspath(args.checkpoint), 'suites': args.suite, 'graders': args.grader,
          'limit': args.limit, 'suite_limits': args.suite_limits, 'wrapper_limit': args.wrapper_limit, 'spec_in_context': args.spec_in_context,
          'max_new_tokens': args.max_new_tokens, 'reasoning': policy.reasoning, 'spec_version': spec.version,
          'wall_seconds': time.perf_counter() - start}
  paths = report.write_report(args.out, arms, samples=samples, disagreements=disagreements, meta=meta, notes=notes,
                              title=f'Evaluation of {args.checkpoint}')
  print(storage.read_text(paths['report']))
  log(f'wrote {", ".join(str(p) for p in paths.values())} in {meta["wall_seconds"]:.0f}s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
