"""Stage 1 entry point: spec-conditioned traces with judge filtering (docs/design.md, stage 2).

  python -m deliberative.generate --config configs/generate.py [--workdir runs/generate]
  python -m deliberative.generate --config configs/generate.py:smoke --workdir /tmp/gen

For each prompt, G_base writes K completions with spec(category) in its system prompt; G_RM grades
each k times against spec(category); the best completion whose min-of-k grade passes the threshold
is stored without the system prompt (deliberative/stage1/). With configs/generate.py:source=labels it is
stage 1 with the labels as the judge (deliberative/stage1/labels.py): no teacher model, the trace written
from each imported prompt's label. The run is resumable: started again on
the same workdir it continues after the last finished shard, and it refuses a workdir made with a
different config. At the end it writes WORKDIR/summary.json, WORKDIR/traces/train.jsonl, builds the
TFDS dataset under WORKDIR/data and prints the SFT command that trains on it. An error the user can
act on is printed as one line; `--debug` (or DELIBERATIVE_DEBUG=1) prints its traceback as well.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from deliberative.common import cli, errors

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally with ":arg".', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: runs/<config.name>).')
flags.DEFINE_bool('debug', False, f'Print tracebacks for user errors too (or set {errors.DEBUG_ENV}=1).')
flags.mark_flags_as_required(['config'])


def run(config, workdir: str | None = None) -> dict:
  """Programmatic entry: what `main` does, for tests and notebooks."""
  from deliberative.common import run_lock
  workdir = workdir or os.path.join('runs', config.name)
  with run_lock.WorkdirLock(workdir, what='trace generation'):  # one writer per workdir
    if 'labels' in config:  # configs/generate.py:source=labels: stage 1 with the labels as the judge
      from deliberative.stage1 import labels
      return labels.run(config, workdir)
    from deliberative.stage1 import pipeline
    return pipeline.run(config, workdir)


def report(summary: dict) -> None:
  keys = ('prompts', 'kept', 'none_passed', 'too_long', 'endpoint_error', 'completions', 'malformed',
          'below_threshold', 'passed')
  print('summary: ' + '  '.join(f'{k} {summary[k]}' for k in keys) +
        f'  yield {summary["yield"]:.3f}  {summary["wall_seconds"]:.1f}s')
  if summary['judge_unparsed'] or summary['judge_truncated']:
    print(f'  judge: {summary["judge_unparsed"]} replies without a grade digit (counted as 0), '
          f'{summary["judge_truncated"]} judgments with the CoT/answer cut to fit judge max_len')
  if summary['malformed_reasons']:
    print('  malformed: ' + ', '.join(f'{k} {v}' for k, v in summary['malformed_reasons'].items()))
  for category, c in summary['per_category'].items():
    print(f'  {category:<18} prompts {c["prompts"]:>4}  kept {c["kept"]:>4}  malformed {c["malformed"]:>4}  '
          f'below {c["below_threshold"]:>4}')
  if summary['too_long_ids']:
    print(f'  too long for the model ({summary["too_long"]}): ' +
          ', '.join(t['id'] for t in summary['too_long_ids'][:20]))
  if summary['endpoint_error_ids']:
    print(f'  endpoint errors ({summary["endpoint_error"]}): ' + json.dumps(summary['endpoint_error_ids'])[:2000])
  if summary.get('judge') == 'labels':
    from deliberative.stage1 import labels
    print('\n'.join(labels.report_lines(summary)))
  print(f'traces: {summary["traces"]}')
  if 'sft_command' in summary:
    print(f'dataset: {summary["dataset"]}\nSFT on these traces:\n  {summary["sft_command"]}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if flags.FLAGS.debug:
    os.environ[errors.DEBUG_ENV] = '1'
  try:
    report(run(_CONFIG.value, _WORKDIR.value))
  except errors.USER_ERRORS as e:
    cli.fail(e, sys.argv)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
