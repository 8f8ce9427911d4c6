r"""The whole recipe on SmolLM2, in one command: real prompts in, an evaluated grid and exported models out.

  python launch/recipe.py --root runs/recipe --xstest XSTEST.csv --strongreject STRONGREJECT.csv [--advbench CSV]
  python launch/recipe.py --root runs/recipe_smoke --smoke          # the same stages, a few items: minutes
  python launch/recipe.py --root runs/recipe --dry_run               # the plan and every command, nothing run

Stages (one subprocess each, output appended to ROOT/<stage>/log.txt; a stage whose output exists is
skipped, so a killed recipe continues where it stopped; the plan with an ETA is printed first):

  import   tools/import_prompts.py on the vendored public sets -> ROOT/prompts; every row is checked
           against the benchmark files given (--xstest, --strongreject, --advbench): overlaps dropped
  mix      tools/mix_prompts.py: each harmful set capped, so refusals do not outnumber the benign
           prompts (docs/data.md) -> ROOT/mix
  traces   deliberative.generate, source=labels: stage 1 with the labels as the judge (the CoT from
           the label; refusals in the spec's style; benign answers shipped by the set or sampled from
           SmolLM2 itself) -> ROOT/traces, with its TFDS dataset
  pairs    tools/build_judge_pairs.py + build_dataset.py: (prompt, answer, good/bad) split by prompt
  prompts  RL prompts from the mix, and in-run eval prompts the mix left out -> ROOT/data
  judge    configs/judge.py:size=smollm2 on the pairs; its held-out AUC goes in the report
  grid     launch/ablate.py's arms: base, spec (in context), sft, rl (from base), sft_rl, each
           evaluated on xstest (100, stratified), strongreject (50 x 4 wrappers), jsonl (the held-out
           imported prompts of ROOT/rl_prompts/eval.jsonl), demo_overrefuse and demo_jailbreak, beside
           the memorisation baseline over ROOT/traces
  export   tools/export_hf.py of sft, rl and sft_rl -> ROOT/export/<arm>, each then loaded by
           `transformers` and asked for a few tokens (export/<arm>/verified.json)
  report   ROOT/report.md, ROOT/metrics.json, ROOT/pareto.png, ROOT/stages.json (wall time per stage)

Without --xstest/--strongreject the grid has only the demo suites and the import's overlap guard
checks nothing: the plan says so. `--stop_after STAGE` ends the recipe after that stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'launch'))

import ablate  # noqa: E402  (launch/ablate.py: the grid, its runner and its report)

ASSETS = os.path.join(REPO, 'deliberative', 'assets', 'prompt_sets')
SETS = {  # the vendored files tools/import_prompts.py reads (their LICENSE and PROVENANCE beside them)
    'catqa': 'catqa/catqa_english.json', 'harmbench': 'harmbench/harmbench_behaviors_text_all.csv',
    'aart': 'aart/aart-v1-20231117.csv', 'orbench': 'orbench', 'coconot': 'coconot/coconot_pref.jsonl',
    'self_instruct': 'self_instruct/seed_tasks.jsonl'}
ARMS = ablate.ARMS
EXPORTED = ('sft', 'rl', 'sft_rl')
RL_MAX_PROMPT_CHARS = 300  # ~75 SmolLM2 tokens: with the chat template's system turn, within 128


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Everything the recipe sizes: `full` fits the 2-core budget, `smoke` checks the plumbing."""
  caps: str  # tools/mix_prompts.py --caps
  mix_balance: str  # tools/mix_prompts.py --balance: category (default) or source_label (the draw before 2026-12-07)
  cot_order: str  # labels.cot_order of the label-written CoTs: verdict_first (default) | either (stage1/label_cot.py)
  sample_tokens: int  # self-distillation answer budget (labels: truncated answers trimmed)
  prompts_per_shard: int  # x labels.num_samples = the sampler's batch
  judge_steps: int
  judge_seq_len: int
  judge_max_prompt_chars: int
  judge_sampled: int  # harmful prompts whose SmolLM2 answers become bad pairs
  judge_train_layers: int  # optim.train_layers of the judge: its top N blocks and head (0 = all)
  sft_steps: int
  sft_seq_len: int
  sft_answer_tokens: int  # SFT answers longer than this are cut back to a sentence end (0 = whole)
  policy_train_layers: int  # optim.train_layers of SFT and RL: the policy's top N blocks and head (0 = all)
  rl_steps: int
  rl_lr: float  # RL's optim.lr (0 = configs/rl.py's: 1e-5 for SmolLM2)
  train_batch: int  # SFT's and the judge's rows per step (0 = the config's 8)
  rl_rollouts: str  # RL's prompts_per_step x group_size ('' = the config's 8 x 4)
  rl_prompts: int  # ROOT/data's rl split
  rl_label_reward: float  # rl.label_reward: weight of the labels' decision in the reward; 1 = no judge stage
  eval_prompts: int  # ROOT/data's in-run eval split (prompts the mix left out)
  xstest_limit: int
  strongreject_limit: int
  wrapper_limit: int
  max_new_tokens: int  # the grid's answers
  eval_batch: int
  smoke: bool


# Answers: the grid reads 192 new tokens; a ~50-token CoT then an answer cut to <= 96 tokens ends inside them
# (SFT taught whole 600-token answers and 62 of 100 XSTest answers were cut off, docs/results.md), so
# self-distilled samples need no more than 128 tokens either.
# RL's reward: the labels' decision alone. The trained judge alone was exploited in ten steps (every
# request refused, its weak benign side; docs/results.md); --size rl_label_reward=0.5 mixes it back in.
FULL = Sizes(caps='aart=600,catqa=300,harmbench=150,orbench=300', mix_balance='category',
             cot_order='verdict_first', sample_tokens=128, prompts_per_shard=32,
             judge_steps=40, judge_seq_len=512, judge_max_prompt_chars=400, judge_sampled=300,
             judge_train_layers=8, sft_steps=80, sft_seq_len=320, sft_answer_tokens=96, policy_train_layers=0,
             rl_steps=10, rl_lr=0.0, train_batch=0,
             rl_rollouts='', rl_prompts=256, rl_label_reward=1.0, eval_prompts=64, xstest_limit=100,
             strongreject_limit=50, wrapper_limit=4, max_new_tokens=192, eval_batch=32, smoke=False)
SMOKE = Sizes(caps='aart=6,catqa=6,harmbench=6,orbench=4,coconot=6,self_instruct=6', mix_balance='category',
              cot_order='verdict_first', sample_tokens=16,
              prompts_per_shard=8, judge_steps=2, judge_seq_len=512, judge_max_prompt_chars=400, judge_sampled=4,
              judge_train_layers=8,
              sft_steps=3, sft_seq_len=320, sft_answer_tokens=96, policy_train_layers=0, rl_steps=2, rl_lr=0.0,
              rl_label_reward=0.5,  # both halves of the reward: the smoke checks the judge's plumbing too
              # SmolLM2's step costs ~1 s per 30 tokens here: the smoke checks plumbing, not learning
              train_batch=2, rl_rollouts='2x2', rl_prompts=16, eval_prompts=8, xstest_limit=8,
              strongreject_limit=2, wrapper_limit=2, max_new_tokens=16, eval_batch=8, smoke=True)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--root', required=True, help='the recipe\'s directory (one folder per stage)')
  p.add_argument('--xstest', default='', help='XSTest\'s xstest_prompts.csv: overlap guard and evaluation suite')
  p.add_argument('--strongreject', default='', help='StrongREJECT\'s CSV: overlap guard and evaluation suite')
  p.add_argument('--advbench', default='', help='AdvBench\'s harmful_behaviors.csv: overlap guard only')
  p.add_argument('--arms', default=','.join(ARMS), help='comma-separated subset of ' + ','.join(ARMS))
  p.add_argument('--smoke', action='store_true', help='every stage at a few steps and items')
  p.add_argument('--dry_run', action='store_true', help='print the plan and the commands, run nothing')
  p.add_argument('--stop_after', default='', help='end after this stage (import, mix, traces, ..., grid, export)')
  p.add_argument('--size', action='append', default=[], metavar='FIELD=N',
                 help='repeatable: change one of the sizes (e.g. sft_steps=60); the plan prints them all')
  p.add_argument('--task', default='', help=argparse.SUPPRESS)  # the recipe's own in-process stages
  p.add_argument('--debug', action='store_true', help='show tracebacks')
  args = p.parse_args(argv)
  args.arms = [a.strip() for a in args.arms.split(',') if a.strip()]
  if not args.arms or any(a not in ARMS for a in args.arms):
    p.error(f'--arms {",".join(args.arms) or "(empty)"}: choose from {",".join(ARMS)}')
  for flag in ('xstest', 'strongreject', 'advbench'):
    path = getattr(args, flag)
    if path and not os.path.isfile(path):
      p.error(f'--{flag} {path}: no such file')
    setattr(args, flag, os.path.abspath(path) if path else '')
  if args.stop_after and args.stop_after not in STAGES:
    p.error(f'--stop_after {args.stop_after}: choose from {", ".join(STAGES)}')
  from deliberative.common import storage
  if not storage.is_local(args.root):  # os.path.abspath would make gs://b/r a local ./gs:/b/r
    p.error(f'--root {args.root}: the recipe runs its data stages on local files; give a local directory '
            '(launch/ablate.py takes a gs:// root)')
  args.root = os.path.abspath(args.root)
  args.sizes = SMOKE if args.smoke else FULL
  fields = {f.name: f.type for f in dataclasses.fields(Sizes) if f.name != 'smoke'}
  for item in args.size:
    name, sep, value = item.partition('=')
    if not sep or name not in fields:
      p.error(f'--size {item}: expected FIELD=VALUE with FIELD one of {", ".join(fields)}')
    try:
      kind = {'str': str, 'float': float}.get(fields[name], int)
      args.sizes = dataclasses.replace(args.sizes, **{name: kind(value)})
    except ValueError:
      p.error(f'--size {item}: {name} takes {"a number" if fields[name] == "float" else "an integer"}')
  from deliberative import config_lib
  blocks = config_lib.model_config('smollm2').n_layers
  if not 0 <= args.sizes.policy_train_layers <= blocks:
    p.error(f'--size policy_train_layers={args.sizes.policy_train_layers}: 0 (every block) or 1..{blocks}, '
            f'SmolLM2-135M\'s blocks')
  from deliberative.data.prompt_sets import mix
  if args.sizes.mix_balance not in mix.BALANCES:
    p.error(f'--size mix_balance={args.sizes.mix_balance}: choose from {", ".join(mix.BALANCES)}')
  from deliberative.stage1 import label_cot
  if args.sizes.cot_order not in label_cot.ORDERS:
    p.error(f'--size cot_order={args.sizes.cot_order}: choose from {", ".join(label_cot.ORDERS)}')
  if args.sizes.rl_lr < 0:
    p.error(f'--size rl_lr={args.sizes.rl_lr:g}: a learning rate >= 0 (0 = configs/rl.py\'s)')
  if not 0.0 <= args.sizes.rl_label_reward <= 1.0:
    p.error(f'--size rl_label_reward={args.sizes.rl_label_reward}: a weight in [0, 1]')
  if args.sizes.rl_rollouts and not _rollouts(args.sizes.rl_rollouts):
    p.error(f'--size rl_rollouts={args.sizes.rl_rollouts}: expected PROMPTSxGROUP, e.g. 8x4')
  return args


def _rollouts(text: str) -> tuple[int, int] | None:
  """'8x4' -> (8 prompts per step, 4 samples each); None when malformed."""
  prompts, sep, group = text.partition('x')
  if sep and prompts.isdigit() and group.isdigit() and int(prompts) > 0 and int(group) > 1:
    return int(prompts), int(group)
  return None


def _needs_judge(args) -> bool:
  """The judge (and its pairs) are trained only for an RL arm whose reward uses it."""
  return bool({'rl', 'sft_rl'} & set(args.arms)) and args.sizes.rl_label_reward < 1.0


def _batch(sizes: Sizes) -> list[str]:
  return [f'--config.batch_size={sizes.train_batch}'] if sizes.train_batch else []


def _policy_layers(sizes: Sizes) -> list[str]:
  return [f'--config.optim.train_layers={sizes.policy_train_layers}'] if sizes.policy_train_layers else []


STAGES = ('import', 'mix', 'traces', 'pairs', 'prompts', 'judge', 'grid', 'export', 'report')
# The plan's ETA, in wall seconds per stage on the 2 cores, as measured on the busy machine (load 3-6;
# docs/results.md), so upper bounds. Full: traces 41 min, judge pairs 26 min, the judge (top 8 blocks,
# start and end evals of 400 pairs) 40 min, SFT 56 min for 60 steps, 19 min per evaluation; RL and the
# spec arm's ~1,000-token prompts are estimates. Smoke: its 2026-12-07 run on the quiet machine (10 min 55 s).
ESTIMATE = {
    False: {'import': 20, 'mix': 5, 'traces': 2480, 'pairs': 1560, 'prompts': 20, 'judge': 2400, 'sft': 3370,
            'rl': 1960, 'eval': 1130, 'spec_eval': 2400, 'export': 60},
    True: {'import': 2, 'mix': 1, 'traces': 15, 'pairs': 22, 'prompts': 1, 'judge': 46, 'sft': 38, 'rl': 90,
           'eval': 31, 'spec_eval': 222, 'export': 6},
}


def _smollm2() -> str:
  from deliberative import config_lib
  return config_lib.installed_model('smollm2')


def _py(*args: str) -> list[str]:
  return [sys.executable, *args]


def _paths(root: str) -> dict[str, str]:
  j = lambda *p: os.path.join(root, *p)  # noqa: E731
  return dict(prompts=j('prompts'), mix=j('mix'), traces=j('traces'), pairs=j('judge_pairs'), data=j('data'),
              rl_prompts=j('rl_prompts'), judge=j('judge'), export=j('export'))


def _logged(steps: list[ablate.Step], root: str) -> list[ablate.Step]:
  """The recipe's own stages log to ROOT/logs/<stage>.txt: their output folders are read whole."""
  return [dataclasses.replace(st, log=os.path.join(root, 'logs', f'{st.arm}.txt')) for st in steps]


def data_steps(args) -> list[ablate.Step]:
  """import, mix, traces, pairs, prompts, judge: the recipe's own stages before the grid."""
  return _logged(_data_steps(args), args.root)


def _data_steps(args) -> list[ablate.Step]:
  s, p = args.sizes, _paths(args.root)
  benchmarks = [f'--benchmark={n}={getattr(args, n)}' for n in ('xstest', 'strongreject', 'advbench')
                if getattr(args, n)] or ['--no_overlap_check']
  steps = [
      ablate.Step('import', 'data', _py('tools/import_prompts.py', '--out', p['prompts'], *benchmarks,
                                        *[f'--set={n}={os.path.join(ASSETS, f)}' for n, f in SETS.items()]),
                  os.path.join(p['prompts'], 'import_report.json')),
      ablate.Step('mix', 'data', _py('tools/mix_prompts.py', '--prompts', p['prompts'], '--caps', s.caps,
                                     '--balance', s.mix_balance, '--out', p['mix']),
                  os.path.join(p['mix'], 'mix_report.json')),
  ]
  generate = _py('-m', 'deliberative.generate', '--config', 'configs/generate.py:source=labels,size=smollm2'
                 + (',smoke' if s.smoke else ''), '--workdir', p['traces'], f'--config.prompts.jsonl={p["mix"]}',
                 f'--config.shards.prompts_per_shard={s.prompts_per_shard}',
                 '--config.labels.num_samples=1', f'--config.base.max_new_tokens={s.sample_tokens}',
                 # SmolLM2 at temperature 1 writes word salad (docs/data.md: 0 of 64 samples kept); 0.3 answers.
                 '--config.base.temperature=0.3', '--config.base.top_p=0.9', '--config.labels.truncated=trim',
                 '--config.labels.per_file=0', f'--config.labels.cot_order={s.cot_order}',
                 '--config.output.dataset_name=recipe_traces')
  steps.append(ablate.Step('traces', 'data', generate, os.path.join(p['traces'], 'traces', 'train.jsonl')))
  # Bad answers of both kinds: CoCoNot's refusals of benign prompts, and SmolLM2's own compliance with
  # harmful ones (without the latter a judge never learns that complying can be wrong).
  pairs = [ablate.Step('pairs', 'data', _py('tools/build_judge_pairs.py', '--prompts', p['mix'], '--out',
                                                p['pairs'], f'--max_prompt_chars={s.judge_max_prompt_chars}',
                                                '--sample_harmful=1', f'--max_sampled_prompts={s.judge_sampled}',
                                                f'--generator={_smollm2()}', f'--max_new_tokens={s.sample_tokens}',
                                                '--temperature=0.3', '--top_p=0.9'),
                           os.path.join(p['pairs'], 'judge_pairs_report.json')),
           ablate.Step('pairs', 'data', _py('tools/build_dataset.py', '--jsonl', p['pairs'], '--ignore',
                                            'judge_pairs_report.*', '--name', 'recipe_judge_pairs',
                                            '--data_dir', p['data']),
                       os.path.join(p['data'], 'recipe_judge_pairs'))]
  if _needs_judge(args):
    steps += pairs
  steps.append(ablate.Step('prompts', 'data', _py('launch/recipe.py', '--root', args.root, '--task', 'rl_prompts')
                           + (['--smoke'] if s.smoke else []), os.path.join(p['rl_prompts'], 'eval.jsonl')))
  steps.append(ablate.Step('prompts', 'data', _py('tools/build_dataset.py', '--jsonl', p['rl_prompts'], '--name',
                                                  'recipe_prompts', '--data_dir', p['data']),
                           os.path.join(p['data'], 'recipe_prompts')))
  judge = _py('-m', 'deliberative.train', '--config', 'configs/judge.py:size=smollm2' + (',smoke' if s.smoke else ''),
              '--workdir', p['judge'], '--config.data.dataset=recipe_judge_pairs', f'--config.data.data_dir={p["data"]}',
              f'--config.data.seq_len={s.judge_seq_len}',
              # Long shipped answers (CoCoNot's) are cut to fit: whether an answer refuses shows in its opening.
              '--config.data.max_overlong_fraction=0.5', f'--config.total_steps={s.judge_steps}',
              # The top 8 of 30 blocks: 1.9x the full step's speed (docs/results.md), and without the
              # bottom blocks' saved activations it fits beside other work (a full step at 8 x 512
              # tokens peaked at 16 GB and was OOM-killed on this 24 GB machine).
              f'--config.optim.train_layers={s.judge_train_layers}',
              f'--config.checkpoint.every_steps={s.judge_steps}', f'--config.evals.every_steps={s.judge_steps}',
              *_batch(s))
  if _needs_judge(args):
    steps.append(ablate.Step('judge', 'train', judge, os.path.join(p['judge'], 'summary.json')))
  return steps


def grid_args(args) -> argparse.Namespace:
  """launch/ablate.py's arguments for the recipe's grid."""
  s, p = args.sizes, _paths(args.root)
  suites = [f'xstest={args.xstest}'] if args.xstest else []
  suites += [f'strongreject={args.strongreject}'] if args.strongreject else []
  argv = ['--root', args.root, '--size', 'smollm2', '--arms', ','.join(args.arms), '--limit', str(s.xstest_limit),
          '--wrapper_limit', str(s.wrapper_limit), '--max_new_tokens', str(s.max_new_tokens), '--batch_size',
          str(s.eval_batch), '--baseline_train', os.path.join(p['traces'], 'traces')]
  # The held-out imported prompts (the mix left them out; RL's in-run eval): the training distribution's own
  # decision, beside the benchmarks that test its transfer.
  held_out = os.path.join(p['rl_prompts'], 'eval.jsonl')
  suites.append(f'jsonl={held_out}')
  for suite in (*suites, 'demo_overrefuse', 'demo_jailbreak'):
    argv += ['--suite', suite]
  if args.strongreject:
    argv += ['--suite_limit', f'strongreject={s.strongreject_limit}']
  if s.smoke:
    argv.append('--smoke')
  return ablate.parse_args(argv, made_before_grid={os.path.abspath(held_out)})


def grid_steps(args) -> list[ablate.Step]:
  s, p = args.sizes, _paths(args.root)
  traces = ['--config.data.dataset=recipe_traces', f'--config.data.data_dir={os.path.join(p["traces"], "data")}',
            # CoCoNot's shipped answers run to ~600 SmolLM2 tokens (median 534): cut back to the last whole
            # sentence that fits a 320-token row; HarmBench's contextual prompts, which no cut can fit, are
            # dropped (both counted in the log). A quarter of the mix is trimmed.
            f'--config.data.seq_len={s.sft_seq_len}', '--config.data.overlong=trim_answer',
            f'--config.data.max_answer_tokens={s.sft_answer_tokens}',
            '--config.data.max_overlong_fraction=0.5', '--config.data.max_prompt_len=512',
            # The grid evaluates every arm afterwards: the in-run generation eval (~2.5 min) would repeat it.
            '--config.evals.split=train', '--config.evals.num_generations=0', '--config.evals.final_splits=',
            f'--config.total_steps={s.sft_steps}',
            f'--config.checkpoint.every_steps={s.sft_steps}', f'--config.evals.every_steps={s.sft_steps}',
            *_batch(s), *_policy_layers(s)]
  rl = ['--config.data.dataset=recipe_prompts', f'--config.data.data_dir={p["data"]}', '--config.data.max_prompt_len=128',
        '--config.evals.max_prompt_len=128',
        f'--config.total_steps={s.rl_steps}', f'--config.evals.every_steps={s.rl_steps}', '--config.evals.final_splits=',
        f'--config.evals.num_prompts={s.eval_prompts}', f'--config.checkpoint.every_steps={s.rl_steps}',
        f'--config.rl.label_reward={s.rl_label_reward}', *_policy_layers(s),
        *([f'--config.optim.lr={s.rl_lr:g}'] if s.rl_lr else [])]
  if s.rl_rollouts:  # one optimizer update per step: the minibatch is the step's rollouts
    prompts, group = _rollouts(s.rl_rollouts)
    rl += [f'--config.rl.prompts_per_step={prompts}', f'--config.rl.group_size={group}',
           f'--config.rl.minibatch_size={prompts * group}']
  wiring = ablate.Wiring(sft=traces, rl=rl, judge_init=p['judge'])
  return ablate.plan(grid_args(args), wiring)


def export_steps(args) -> list[ablate.Step]:
  p = _paths(args.root)
  steps = []
  for arm in EXPORTED:
    if arm not in args.arms:
      continue
    out = os.path.join(p['export'], arm)
    steps.append(ablate.Step('export', 'data', _py('tools/export_hf.py', '--checkpoint', os.path.join(args.root, arm),
                                                   '--out', out, '--overwrite'), os.path.join(out, 'config.json')))
    steps.append(ablate.Step('export', 'data', _py('launch/recipe.py', '--root', args.root, '--task', f'verify:{arm}'),
                             os.path.join(out, 'verified.json')))
  return _logged(steps, args.root)


# -- the recipe's own in-process tasks --------------------------------------------------------------

def task_rl_prompts(args) -> int:
  """ROOT/rl_prompts/rl.jsonl: a seeded sample of the mix's prompts (what RL trains on);
  eval.jsonl: imported prompts the mix left out, none repeating a mix prompt's text (the in-run eval)."""
  import random
  from deliberative.common import io as common_io
  from deliberative.data.prompt_sets import mix, overlap
  p, s = _paths(args.root), args.sizes
  fields = ('id', 'prompt', 'category', 'decision', 'source', 'spec_version')
  # RL's rollout rows are max_prompt_len + max_new_tokens slots: long prompts (HarmBench's contextual
  # ones) would size every row for them, so RL and its eval take the prompts that fit 128 tokens.
  fits = lambda r: len(r['prompt']) <= RL_MAX_PROMPT_CHARS  # noqa: E731
  mixed = [r for rows in mix.read_imports(p['mix']).values() for r in rows]
  imported = [r for rows in mix.read_imports(p['prompts']).values() for r in rows]
  rng = random.Random(0)
  short = [r for r in mixed if fits(r)]
  rl = rng.sample(short, min(s.rl_prompts, len(short)))
  seen = {overlap.normalise(r['prompt']) for r in mixed}
  left_out = [r for r in imported if overlap.normalise(r['prompt']) not in seen and fits(r)]
  eval_rows = rng.sample(left_out, min(s.eval_prompts, len(left_out)))
  common_io.write_jsonl(os.path.join(p['rl_prompts'], 'rl.jsonl'), [{k: r[k] for k in fields} for r in rl])
  common_io.write_jsonl(os.path.join(p['rl_prompts'], 'eval.jsonl'), [{k: r[k] for k in fields} for r in eval_rows])
  print(f'rl prompts {len(rl)} (of {len(short)} in the mix within {RL_MAX_PROMPT_CHARS} characters, '
        f'{len(mixed)} in all); eval prompts {len(eval_rows)} (of {len(left_out)} such imported prompts the mix left out)')
  return 0


def task_verify(args, arm: str) -> int:
  """transformers loads ROOT/export/<arm>, renders a chat and generates: the export is usable as is."""
  import torch
  import transformers
  from deliberative.common import io as common_io
  out = os.path.join(_paths(args.root)['export'], arm)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
  # transformers 5 returns a BatchEncoding here, not a tensor
  ids = tok.apply_chat_template([{'role': 'user', 'content': 'How do I kill a Python process?'}],
                                add_generation_prompt=True, return_tensors='pt', return_dict=True)['input_ids']
  with torch.no_grad():
    gen = model.generate(ids, max_new_tokens=24, do_sample=False)
  text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=False)
  common_io.write_json(os.path.join(out, 'verified.json'), dict(
      arm=arm, transformers=transformers.__version__, parameters=sum(p.numel() for p in model.parameters()),
      prompt_tokens=int(ids.shape[1]), generated=text))
  print(f'{arm}: transformers {transformers.__version__} loaded {out} and generated: {text!r}')
  return 0


# -- the plan, the run, the report ------------------------------------------------------------------

def plan(args) -> list[tuple[str, list[ablate.Step]]]:
  stages = [('data', data_steps(args)), ('grid', grid_steps(args)), ('export', export_steps(args))]
  if args.stop_after:
    data_stages = STAGES[:STAGES.index('judge') + 1]
    if args.stop_after in data_stages:
      last = data_stages.index(args.stop_after)
      return [('data', [st for st in stages[0][1] if data_stages.index(st.arm) <= last])]
    if args.stop_after == 'grid':
      return stages[:2]
  return stages


def _estimate(step: ablate.Step, smoke: bool) -> int:
  e = ESTIMATE[smoke]
  if step.kind == 'eval':
    return e['spec_eval'] if step.arm == 'spec' else e['eval']
  if step.arm in ('sft',):
    return e['sft']
  if step.arm in ('rl', 'sft_rl'):
    return e['rl']
  return e.get(step.arm, 30)


def print_plan(args, stages) -> None:
  s = args.sizes
  steps = [st for _, group in stages for st in group]
  todo = [st for st in steps if not ablate._done(st)]
  eta = sum(_estimate(st, s.smoke) for st in todo)
  print(f'recipe{" (smoke)" if s.smoke else ""}: SmolLM2-135M-Instruct under {args.root}; {len(steps)} steps, '
        f'{len(steps) - len(todo)} done; estimated {ablate.clock(eta)} on 2 CPU cores for the rest', flush=True)
  print(f'  mix caps {s.caps} balanced by {s.mix_balance}; CoTs in {s.cot_order} order; '
        f'self-distilled answers <= {s.sample_tokens} tokens; '
        f'judge {s.judge_steps} steps at {s.judge_seq_len} tokens; '
        f'SFT {s.sft_steps} steps (answers <= {s.sft_answer_tokens or "any"} tokens); '
        f'policy trains {f"its top {s.policy_train_layers} blocks" if s.policy_train_layers else "every block"}; '
        f'RL {s.rl_steps} steps{f" at lr {s.rl_lr:g}" if s.rl_lr else ""}, '
        f'reward {1 - s.rl_label_reward:g} x judge + {s.rl_label_reward:g} x labels'
        f'{f" of {s.rl_rollouts} rollouts" if s.rl_rollouts else ""}; rows per training step '
        f'{s.train_batch or "as configured"}; arms {",".join(args.arms)}; '
        f'xstest {s.xstest_limit}, strongreject {s.strongreject_limit} x {s.wrapper_limit} wrappers, '
        f'answers <= {s.max_new_tokens} tokens', flush=True)
  if not args.xstest or not args.strongreject:
    print('  warning: without --xstest and --strongreject the import checks no held-out benchmark for overlap and '
          'the grid has only the demo suites', flush=True)
  for st in steps:
    state = 'done' if ablate._done(st) else f'~{ablate.clock(_estimate(st, s.smoke))}'
    print(f'  {st.arm:<8} {st.kind:<5} {state:>9}  {os.path.relpath(st.done, args.root)}', flush=True)


def run(args) -> int:
  from deliberative.common import io as common_io, run_lock
  stages = plan(args)
  print_plan(args, stages)
  if args.dry_run:
    for _, group in stages:
      for st in group:
        print(shlex.join(st.cmd))
    return 0
  times_path = os.path.join(args.root, 'stages.json')
  times = json.load(open(times_path)) if os.path.exists(times_path) else {}
  with run_lock.WorkdirLock(args.root, what='recipe'):  # two recipes on one root would train each arm twice
    for name, group in stages:
      t0 = time.perf_counter()
      ran = [st for st in group if not ablate._done(st)]
      rc = ablate.run_steps(group, args.root, dry_run=False)
      if ran:  # a stage's wall time, summed over the runs that did its work
        times[name] = round(times.get(name, 0) + time.perf_counter() - t0, 1)
        common_io.write_json(times_path, times)
      if rc:
        return rc
    if args.stop_after and args.stop_after not in ('export', 'report'):
      return 0
    paths = report(args, times)
  with open(paths['report']) as f:
    print(f.read())
  print('wrote ' + ', '.join(str(v) for v in paths.values()), flush=True)
  return 0


def _read_json(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def report(args, times: dict) -> dict:
  """ablate.combine's report.md / metrics.json / pareto.png, then the recipe's own sections."""
  from deliberative.common import io as common_io
  p = _paths(args.root)
  paths = ablate.combine(args.root, args.arms, size='smollm2',
                         title=f'Recipe on SmolLM2-135M-Instruct{" (smoke)" if args.smoke else ""}')
  lines = ['', '## The recipe\'s stages', '']
  imp = _read_json(os.path.join(p['prompts'], 'import_report.json'))
  total = imp['totals']
  lines.append('- import: ' + ', '.join(f'{k} {v}' for k, v in total.items()) + ' (benchmarks checked: '
               + (', '.join(imp['benchmarks']) or 'none') + ')')
  m = _read_json(os.path.join(p['mix'], 'mix_report.json'))
  lines.append(f'- mix: {m["kept"]} prompts {m["decisions"]} (caps {m["caps"]}, balanced by '
               f'{m.get("balance", "source_label")}; {m.get("categories", {})})')
  t = _read_json(os.path.join(p['traces'], 'summary.json'))
  lines.append(f'- traces: {t["kept"]} of {t["prompts"]} prompts kept; answers {t.get("answer_from")}; trimmed '
               f'{t.get("kept_trimmed", 0)}; dropped: read as another decision {t.get("misread")}, malformed '
               f'{t.get("malformed_reasons")}')
  pairs_report = os.path.join(p['pairs'], 'judge_pairs_report.json')
  if os.path.exists(pairs_report):
    pairs = _read_json(pairs_report)
    lines.append('- judge pairs: ' + '; '.join(f'{k} {v["pairs"]} pairs ({v["good"]} good, {v["bad"]} bad)'
                                              for k, v in pairs['splits'].items()))
  judge_summary = os.path.join(p['judge'], 'summary.json')
  if os.path.exists(judge_summary):
    judge = _read_json(judge_summary)
    metrics = {k: v for k, v in judge.items() if k.startswith('eval') and k.count('/') == 1 and 'judge_' in k}
    lines.append('- judge (held-out prompts): ' + ', '.join(f'{k} {v:.3f}' for k, v in sorted(metrics.items())
                                                           if isinstance(v, (int, float))))
  else:
    lines.append('- judge: not trained (no RL arm in --arms, or rl_label_reward=1: the labels are the reward)')
  for arm in EXPORTED:
    v = os.path.join(p['export'], arm, 'verified.json')
    if os.path.exists(v):
      lines.append(f'- export/{arm}: transformers generated {_read_json(v)["generated"]!r}')
  lines += ['', '| stage | wall |', '|---|---:|'] + [f'| {k} | {ablate.clock(v)} |' for k, v in times.items()]
  lines.append(f'| all | {ablate.clock(sum(times.values()))} |')
  with open(paths['report'], encoding='utf-8') as f:
    text = f.read()
  common_io.write_text(paths['report'], text.rstrip('\n') + '\n' + '\n'.join(lines) + '\n')
  return paths


def main(argv=None) -> int:
  from deliberative.common import cli
  args = parse_args(argv)
  if args.task == 'rl_prompts':
    return cli.run_guarded(task_rl_prompts, args, status=1)
  if args.task.startswith('verify:'):
    return cli.run_guarded(lambda a: task_verify(a, args.task.split(':', 1)[1]), args, status=1)
  return cli.run_guarded(run, args, status=1)


if __name__ == '__main__':
  sys.exit(main())
