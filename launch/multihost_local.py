"""Starts N local processes that form one JAX job over 127.0.0.1 (gloo CPU collectives).

  python launch/multihost_local.py --processes 2 --devices_per_process 2 -- \\
      --config configs/sft.py:smoke --workdir runs/mh

What a TPU pod does with one process per host, on one machine: each process reads its own
data shard, and checkpoints and metrics are written once. Exits with the first non-zero code.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--devices_per_process', type=int, default=1)
  parser.add_argument('train_args', nargs=argparse.REMAINDER, help='arguments after -- go to deliberative.train')
  args = parser.parse_args(argv)
  train_args = args.train_args[1:] if args.train_args[:1] == ['--'] else args.train_args
  address = f'127.0.0.1:{free_port()}'
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={args.devices_per_process}',
             JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, '-m', 'deliberative.train', *train_args,
                             f'--coordinator_address={address}', f'--num_processes={args.processes}',
                             f'--process_id={i}'], env=env) for i in range(args.processes)]
  return wait_all(procs)


def wait_all(procs: list[subprocess.Popen], poll_seconds: float = 0.5) -> int:
  """0 when every process succeeds; else the first failure's code, after stopping the others
  (left alone they would block forever in their next collective, waiting for the dead peer)."""
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = next((c for c in codes if c not in (None, 0)), None)
      if failed is not None:
        for p in procs:
          if p.poll() is None:
            p.kill()
        for p in procs:
          p.wait()
        return failed
      if all(c == 0 for c in codes):
        return 0
      time.sleep(poll_seconds)
  except BaseException:  # Ctrl-C or a timeout in the caller: no orphaned workers
    for p in procs:
      if p.poll() is None:
        p.kill()
    raise


if __name__ == '__main__':
  sys.exit(main())
