"""Training entry point.

  python -m deliberative.train --config configs/sft.py [--workdir runs/sft] [--config.total_steps=100]
  python -m deliberative.train --config configs/sft.py:size=small,smoke

Checks the config (values, mesh, and against the checkpoints of a run it resumes), then writes
the resolved config to WORKDIR/config.json and hands over to
`deliberative.trainers.<config.trainer>.train(config, workdir)`. An error the user can act on is
printed as one line; `--debug` (or DELIBERATIVE_DEBUG=1) prints its traceback as well.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from deliberative.common import cli, errors

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally with ":arg".', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: runs/<config.name>).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for multi-process runs; "auto" on TPU pods '
    '(jax.distributed.initialize detects the slice).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index in a multi-process run.')
_ALLOW_CHANGE = flags.DEFINE_list(
    'allow_config_change', [], 'Config fields (e.g. optim.lr,data.seq_len) that may differ from the checkpoint '
    'this run resumes although they change the math.')
flags.DEFINE_bool('debug', False, f'Print tracebacks for user errors too (or set {errors.DEBUG_ENV}=1).')
flags.mark_flags_as_required(['config'])


def run(config, workdir: str | None = None, allow_config_change=(), devices=None) -> dict:
  """Programmatic entry: what `main` does, for tests and notebooks. `devices`: the mesh's (default
  all of them; a subset runs the same config on fewer, e.g. one, in the same process)."""
  import jax
  from deliberative import config_lib
  from deliberative.common import run_lock, storage
  from deliberative.trainers import resume, runtime

  workdir = workdir or os.path.join('runs', config.name)
  devices = list(devices) if devices is not None else jax.devices()
  config_lib.validate(config, len(devices))
  try:
    trainer = importlib.import_module(f'deliberative.trainers.{config.trainer}')
  except ModuleNotFoundError as e:
    raise ValueError(f'config.trainer={config.trainer!r}: no module deliberative/trainers/{config.trainer}.py') from e
  # One writer per workdir (process 0 holds it for a multi-host run); a second is refused before it reads.
  lock = (run_lock.WorkdirLock(workdir, what=f'{config.trainer} training', note=runtime.log)
          if jax.process_index() == 0 else contextlib.nullcontext())
  with lock:
    # Nothing is written before the config has been checked against the run it would continue.
    resumed_step = resume.check_resume(config, workdir, trainer.model_config, allow_config_change)
    storage.makedirs(workdir)
    resume.write_config(config, workdir, resumed_step)
    runtime.log(f'{config.trainer}: workdir {storage.abspath(workdir)} on {len(devices)} '
                f'{devices[0].platform} device(s), {jax.process_count()} process(es)')
    return trainer.train(config, workdir, devices)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax and TFDS log every file operation at INFO; the run's own lines are what matter.
  logging.set_verbosity(logging.WARNING)
  if flags.FLAGS.debug:  # the checkpointer, too, keeps Orbax's own error logs then
    os.environ[errors.DEBUG_ENV] = '1'
  try:
    if _COORDINATOR.value:
      import jax
      if _COORDINATOR.value == 'auto':
        jax.distributed.initialize()
      else:
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    run(_CONFIG.value, _WORKDIR.value, _ALLOW_CHANGE.value)
  except errors.USER_ERRORS as e:
    cli.fail(e, sys.argv)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
