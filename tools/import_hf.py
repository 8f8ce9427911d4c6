"""Converts a Hugging Face Llama/Qwen2 directory, or a GGUF file, into an Orbax checkpoint for `init_from`.

  python tools/import_hf.py --hf_dir HF_DIR --out CKPT_DIR [--dtype bfloat16]
  python tools/import_hf.py --gguf FILE.gguf --out CKPT_DIR [--hf_out HF_DIR] [--dtype bfloat16]

A GGUF (llama.cpp; architectures llama and qwen2) is dequantized one tensor at a time.
--hf_out also writes it as a Hugging Face directory: config.json, safetensors, tokenizer.json
built from the file's vocabulary and merges, tokenizer_config.json with its chat template, and
generation_config.json with its end-of-sequence ids. Either --out or --hf_out may be left out.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deliberative.weights import checkpoints  # noqa: E402
from deliberative.common import errors  # noqa: E402
from deliberative.weights import gguf, hf  # noqa: E402
from deliberative.weights import source as model_source  # noqa: E402
from deliberative.model import loading  # noqa: E402


def _tokenizer_meta(path: str, tokenizer) -> dict:
  """What the checkpoint records of the model's own tokenizer, as a trainer records it
  (trainers/resume.py), so tools/export_hf.py exports the weights with it."""
  return {'tokenizer': path, 'tokenizer_version': tokenizer.version, 'tokenizer_vocab_size': tokenizer.vocab_size,
          'tokenizer_info': model_source.tokenizer_record(tokenizer, path)}


def _import_gguf(args) -> None:
  f = gguf.GGUFFile(args.gguf)
  cfg = gguf.read_config(f, param_dtype=args.dtype)
  gguf.check_tensors(f, cfg)  # every name, shape and type, before any slow work
  if args.hf_out:
    hf.check_export_target(args.hf_out, overwrite=args.overwrite, extra_files=gguf.TOKENIZER_FILES)
    gguf.build_tokenizer(f)  # an unsupported vocabulary fails before the slow work
  params = gguf.load_params(f, cfg, loading.abstract_params(cfg))
  path = os.path.abspath(args.gguf)
  if args.out:
    meta = {'model': cfg.to_dict(), 'source': f'gguf:{path}', **_tokenizer_meta(path, gguf.hf_tokenizer(path))}
    checkpoints.save_params(args.out, 0, params, meta)
  types = ', '.join(f'{n} x{c}' for n, c in sorted(gguf.tensor_types(f).items(), key=lambda kv: -kv[1]))
  print(f'imported {f.architecture} ({cfg.param_count():,} parameters) from {args.gguf}'
        + (f' -> {args.out}' if args.out else ''))
  print(f'  tensors: {types}; dequantized to {args.dtype}')
  if not args.hf_out:
    return
  done = gguf.write_hf_dir(args.gguf, args.hf_out, dtype=args.dtype, overwrite=args.overwrite, params=params)
  print(f'  tokenizer: vocab {done["vocab_size"]:,} ({done["pre_tokenizer"]} pre-tokenizer); '
        f'chat template: {"yes" if done["chat_template"] else "no"}; eos ids {done["eos_token_id"]}')
  print(f'  Hugging Face directory -> {done["out"]}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--hf_dir', help='directory with config.json and *.safetensors')
  source.add_argument('--gguf', help='a llama.cpp GGUF file (llama or qwen2 architecture)')
  parser.add_argument('--out', help='Orbax checkpoint directory to create')
  parser.add_argument('--hf_out', help='with --gguf: also write a Hugging Face directory here')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace --hf_out if it holds nothing but a previous export')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'), help='stored parameter dtype')
  parser.add_argument('--debug', action='store_true', help='print tracebacks for errors too')
  args = parser.parse_args(argv)
  if args.hf_out and not args.gguf:
    parser.error('--hf_out is for --gguf (an --hf_dir is already a Hugging Face directory)')
  if not args.out and not args.hf_out:
    parser.error('--out is required' + (' (or --hf_out)' if args.gguf else ''))
  if args.out and checkpoints.latest_step(args.out) is not None:
    parser.error(f'--out {args.out} already holds a checkpoint; choose an empty directory')
  if args.gguf:
    _import_gguf(args)
    return 0
  cfg = hf.read_config(args.hf_dir, param_dtype=args.dtype)
  tokenizer_path = model_source.ModelSource(args.hf_dir, 'hf').tokenizer_path()
  tokenizer = None
  if tokenizer_path:
    try:
      tokenizer = model_source.tokenizer_for(tokenizer_path)
    except ValueError as e:  # the weights import without it; the export then needs --tokenizer
      print(f'note: {errors.one_line(e)}; the tokenizer is not recorded', file=sys.stderr)
  params = hf.load_params(args.hf_dir, cfg, loading.abstract_params(cfg))
  meta = {'model': cfg.to_dict(), 'source': f'hf:{os.path.abspath(args.hf_dir)}'}
  if tokenizer is not None:
    meta.update(_tokenizer_meta(tokenizer_path, tokenizer))
  checkpoints.save_params(args.out, 0, params, meta)
  print(f'imported {hf.architecture(cfg)} ({cfg.param_count():,} parameters) from {args.hf_dir} -> {args.out}'
        + ('' if tokenizer else ' (no tokenizer recorded: give tools/export_hf.py --tokenizer)'))
  return 0


if __name__ == '__main__':
  try:
    sys.exit(main())
  except errors.USER_ERRORS as e:  # a bad file or an existing --hf_out: one line (main() raises, for callers)
    if errors.debug_requested(sys.argv[1:]):
      raise
    print(f'error: {errors.one_line(e)}', file=sys.stderr)
    sys.exit(1)
