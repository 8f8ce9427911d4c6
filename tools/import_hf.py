"""Converts a Hugging Face Llama/Qwen2 directory into an Orbax checkpoint for `init_from`.

  python tools/import_hf.py --hf_dir HF_DIR --out CKPT_DIR [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deliberative import checkpoints  # noqa: E402
from deliberative.model import hf, loading  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--hf_dir', required=True, help='directory with config.json and *.safetensors')
  parser.add_argument('--out', required=True, help='Orbax checkpoint directory to create')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'), help='stored parameter dtype')
  args = parser.parse_args(argv)
  if checkpoints.latest_step(args.out) is not None:
    parser.error(f'--out {args.out} already holds a checkpoint; choose an empty directory')
  cfg = hf.read_config(args.hf_dir, param_dtype=args.dtype)
  params = hf.load_params(args.hf_dir, cfg, loading.abstract_params(cfg))
  checkpoints.save_params(args.out, 0, params, {'model': cfg.to_dict(), 'source': f'hf:{os.path.abspath(args.hf_dir)}'})
  print(f'imported {hf.architecture(cfg)} ({cfg.param_count():,} parameters) from {args.hf_dir} -> {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
