"""What the absl entry points share (`deliberative.train`, `deliberative.generate`): a user's
mistake, in a flag or in the run it starts, is one line naming its cause, not a traceback.

    app.run(main, flags_parser=cli.parse_flags)
    ... except errors.USER_ERRORS as e: cli.fail(e, sys.argv)
"""

from __future__ import annotations

import os
import sys

from absl import flags

from deliberative.common import errors


def fail(e: BaseException, argv) -> None:
  """One line for a user's error (the traceback only when asked), exit status 1."""
  if errors.debug_requested(argv):
    raise e
  print(f'error: {errors.one_line(e)}', file=sys.stderr)
  print(f'(--debug or {errors.DEBUG_ENV}=1 prints the traceback)', file=sys.stderr)
  sys.exit(1)


def parse_flags(argv):
  """absl's parser, with config errors reported as the flag they came from rather than a traceback:
  a typo in an override (ml_collections raises AttributeError/KeyError) or in the ":arg" part."""
  try:
    missing = missing_config_file(argv)
    if missing:  # ml_collections loads the file lazily and then reports it in three wrapped sentences
      raise FileNotFoundError(missing)
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, *errors.USER_ERRORS) as e:
    if errors.debug_requested(argv):
      raise
    print(f'error: {flag_error(e, argv)}', file=sys.stderr)
    print('Pass --helpshort or --helpfull to see help on flags.', file=sys.stderr)
    sys.exit(2)


def missing_config_file(argv) -> str | None:
  """'--config PATH[:ARG]: no such file PATH' when `--config` names a file that is not there."""
  for i, a in enumerate(argv):
    value = argv[i + 1] if a == '--config' and i + 1 < len(argv) else a[9:] if a.startswith('--config=') else None
    if value is not None and not os.path.isfile(value.partition(':')[0]):
      return f'--config {value}: no such file {value.partition(":")[0]}'
  return None


def flag_error(e: BaseException, argv) -> str:
  text = str(e.args[0]) if e.args else str(e)
  if 'Traceback (most recent call last)' in text:  # a config file's get_config raised: its last line says why
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f'{text.split(":")[0]}: {lines[-1]}'
  if not isinstance(e, (AttributeError, KeyError)):
    return errors.one_line(e)
  # ml_collections: "'total_step'\nDid you mean ..." as a repr inside the message
  text = text.replace('\\n', '\n').replace("\\'", "'").strip('\'"')
  missing, _, hint = text.partition('\n')
  missing = missing.strip('\'"')
  culprits = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.') and
              a.split('=')[0].split('.')[-1] == missing]
  where = ', '.join(culprits) or '--config override'
  return f'{where}: the config has no field {missing!r}. {" ".join(hint.split())}'.strip()


def run_guarded(command, args, status: int = 2) -> int:
  """`command(args)` for an argparse entry point (evaluate, serve): a user's error is one line and
  exit `status`; `args.debug` or DELIBERATIVE_DEBUG=1 re-raises it with its traceback."""
  try:
    return command(args)
  except errors.USER_ERRORS as e:
    if getattr(args, 'debug', False) or errors.debug_requested():
      raise
    print(f'error: {errors.one_line(e)}', file=sys.stderr)
    return status
