"""Shared pieces for trainer tests: a tiny fast SFT config, overrides, CLI flags, losses, and the
one way a test runs a command as a user would (a real process)."""

import os
import subprocess
import sys

from deliberative import config_lib


def tiny_sft_config(data_dir: str, **changes):
  import configs.sft
  c = configs.sft.get_config('smoke')
  c.model = config_lib.model_config('tiny', d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=128)
  c.data.data_dir = data_dir
  c.data.seq_len = 192  # the longest demo trace is 171 tokens
  c.batch_size = 8  # divisible by the 8 fake devices of the test process
  c.mesh.data = -1
  return override(c, **changes)


def override(config, **changes):
  """Sets dotted keys (`'checkpoint.every_steps': 3`) on a ConfigDict; returns it."""
  for key, value in changes.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def losses(workdir: str) -> dict[int, float]:
  from deliberative.trainers.metrics import read_metrics
  return {m['step']: m['train/loss'] for m in read_metrics(workdir) if 'train/loss' in m}


def cli_args(config) -> list[str]:
  """The same config as command-line overrides of configs/sft.py:smoke (for subprocess runs)."""
  flat = []

  def walk(prefix, node):
    for k, v in node.items():
      if hasattr(v, 'items'):
        walk(f'{prefix}{k}.', v)
      elif k != 'rules' and v is not None:  # None fields keep their (placeholder) default
        flat.append(f'--config.{prefix}{k}={v}')
  walk('', config)
  return flat


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
  """`python ARGS` from the repository root in a process of its own: its real exit status, stdout
  and stderr (what a user sees), with the test's environment plus `env`."""
  return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, 'PYTHONPATH': REPO, **(env or {})}, timeout=timeout)
