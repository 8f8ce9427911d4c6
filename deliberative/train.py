"""Training entry point.

  python -m deliberative.train --config configs/sft.py [--workdir runs/sft] [--config.total_steps=100]
  python -m deliberative.train --config configs/sft.py:size=small,smoke

Writes the resolved config to WORKDIR/config.json and hands over to
`deliberative.trainers.<config.trainer>.train(config, workdir)`.
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally with ":arg".', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default: runs/<config.name>).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for multi-process runs; "auto" on TPU pods '
    '(jax.distributed.initialize detects the slice).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index in a multi-process run.')
flags.mark_flags_as_required(['config'])


def run(config, workdir: str | None = None) -> dict:
  """Programmatic entry: what `main` does, for tests and notebooks."""
  import jax
  from deliberative.trainers import runtime

  workdir = workdir or os.path.join('runs', config.name)
  os.makedirs(workdir, exist_ok=True)
  runtime.write_json_atomic(os.path.join(workdir, 'config.json'), config.to_dict())
  try:
    trainer = importlib.import_module(f'deliberative.trainers.{config.trainer}')
  except ModuleNotFoundError as e:
    raise ValueError(f'config.trainer={config.trainer!r}: no module deliberative/trainers/{config.trainer}.py') from e
  runtime.log(f'{config.trainer}: workdir {os.path.abspath(workdir)} on {jax.device_count()} '
              f'{jax.devices()[0].platform} device(s), {jax.process_count()} process(es)')
  return trainer.train(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax and TFDS log every file operation at INFO; the run's own lines are what matter.
  logging.set_verbosity(logging.WARNING)
  if _COORDINATOR.value:
    import jax
    if _COORDINATOR.value == 'auto':
      jax.distributed.initialize()
    else:
      jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                 process_id=_PROCESS_ID.value)
  from deliberative.trainers.runtime import NonFiniteLoss
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except NonFiniteLoss as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
