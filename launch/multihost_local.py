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
  codes = [p.wait() for p in procs]
  return next((c for c in codes if c), 0)


if __name__ == '__main__':
  sys.exit(main())
