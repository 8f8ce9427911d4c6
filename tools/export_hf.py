"""Writes a Hugging Face directory (config.json, safetensors, generation_config.json).

  python tools/export_hf.py --checkpoint CKPT_DIR_OR_WORKDIR --out HF_DIR [--dtype bfloat16]

--out must lie outside the checkpoint and its workdir. --overwrite replaces only a directory
that holds nothing but a previous export.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deliberative.weights import checkpoints  # noqa: E402
from deliberative.tokenizer import export as hf_tokenizer  # noqa: E402
from deliberative.common import errors  # noqa: E402
from deliberative.judge import JUDGE_FORMAT_FILE  # noqa: E402
from deliberative.weights import hf, source  # noqa: E402
from deliberative.model import loading  # noqa: E402


def _write_extras(directory: str, tokenizer, reasoning: bool, judge_format) -> None:
  if tokenizer is not None:
    hf_tokenizer.write_hf_tokenizer(tokenizer, directory, reasoning=reasoning)
  if judge_format:  # a judge trained by configs/judge.py: its rubric, spec view and length travel with it
    with open(os.path.join(directory, JUDGE_FORMAT_FILE), 'w') as f:
      json.dump(judge_format, f, indent=2, sort_keys=True)


def _sources(checkpoint_arg: str, ckpt_dir: str) -> dict[str, str]:
  """Real paths the export reads from -> kind: the checkpoint root and, for a root named
  `checkpoints`, its workdir (where metrics, samples and summaries live)."""
  ckpt_dir = os.path.abspath(ckpt_dir)
  out = {os.path.realpath(ckpt_dir): 'checkpoint'}
  for root in (ckpt_dir, os.path.realpath(ckpt_dir)):
    if os.path.basename(root) == 'checkpoints':
      out.setdefault(os.path.realpath(os.path.dirname(root)), 'workdir')
  out.setdefault(os.path.realpath(checkpoint_arg), 'workdir')  # resolve_dir went into <arg>/checkpoints
  return out


def _refuse_overlap(parser, out_arg: str, checkpoint_arg: str, ckpt_dir: str) -> None:
  """An export into (or around) what it reads would delete the run on --overwrite, or mix
  Hugging Face files into it: refused either way. Real paths, so a symlink cannot hide it."""
  out = os.path.realpath(out_arg)
  found = []  # (rank, ...): name the closest relation, e.g. 'is the workdir' over 'contains the checkpoint'
  for source, kind in _sources(checkpoint_arg, ckpt_dir).items():
    common = os.path.commonpath([out, source])
    if out == source:
      found.append((0, 'is', kind, source))
    elif common == source:
      found.append((1 if kind == 'checkpoint' else 2, 'lies inside', kind, source))
    elif common == out:
      found.append((3 if kind == 'workdir' else 4, 'contains', kind, source))
  if found:
    _, relation, kind, source = min(found)
    shown = out_arg if out == os.path.abspath(out_arg) else f'{out_arg} (= {out})'
    parser.error(f'--out {shown} {relation} the {kind} {source} it exports from; '
                 f'choose an --out outside it (--overwrite does not change this)')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True, help='Orbax checkpoint root, or a training workdir')
  parser.add_argument('--out', required=True, help='Hugging Face directory to write')
  parser.add_argument('--dtype', default=None, choices=('float32', 'bfloat16', 'float16'),
                      help='tensor dtype in the files (default: the checkpoint parameter dtype)')
  parser.add_argument('--max_shard_gb', type=float, default=2.0, help='split safetensors above this size')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace --out if it holds nothing but a previous export')
  parser.add_argument('--tokenizer', default=None,
                      help="tokenizer to export with the weights: a sentencepiece .model ('default' = the "
                           'packaged one), a Hugging Face directory / tokenizer.json, or a GGUF file '
                           '(default: the one the checkpoint was trained with, if it records one)')
  parser.add_argument('--debug', action='store_true', help='print tracebacks for errors too')
  args = parser.parse_args(argv)
  try:
    return _export(parser, args)
  except errors.USER_ERRORS as e:  # an existing --out, a damaged checkpoint, a full disk: one line
    if args.debug or errors.debug_requested():
      raise
    print(f'error: {errors.one_line(e)}', file=sys.stderr)
    return 1


def _export(parser, args) -> int:
  ckpt_dir = checkpoints.resolve_dir(args.checkpoint)
  _refuse_overlap(parser, args.out, args.checkpoint, ckpt_dir)
  extra_files = (*hf_tokenizer.FILES, JUDGE_FORMAT_FILE)
  hf.check_export_target(args.out, overwrite=args.overwrite, extra_files=extra_files)  # before the slow restore
  meta = checkpoints.load_meta(ckpt_dir)
  cfg = checkpoints.model_config_from_meta(meta)
  tokenizer_path = args.tokenizer or meta.get('tokenizer')
  tokenizer, reasoning = None, True
  if tokenizer_path:
    tokenizer = source.tokenizer_for(tokenizer_path)
    added = [token for token, _ in getattr(tokenizer, 'added_tokens', ())]
    if tokenizer.vocab_size > cfg.vocab_size:
      # The loader adds reasoning markers a model's own vocabulary lacks (<think>/</think> on
      # SmolLM2); a model not trained here has no rows for them: its own tokenizer without them.
      if tokenizer.vocab_size - len(added) > cfg.vocab_size:
        flag = '--tokenizer ' + args.tokenizer if args.tokenizer else f'the recorded tokenizer {tokenizer_path}'
        parser.error(f'{flag} has {tokenizer.vocab_size - len(added):,} tokens of its own, more than the '
                     f'model vocab {cfg.vocab_size:,} of {ckpt_dir}: not this model\'s tokenizer')
      reasoning = False
    recorded = meta.get('tokenizer_version')
    if not args.tokenizer and recorded and recorded != tokenizer.version:
      raise ValueError(f'{ckpt_dir}: trained with tokenizer {recorded}, but {tokenizer_path} now holds '
                       f'{tokenizer.version}; pass --tokenizer with the one it was trained with')
  params = checkpoints.restore_params(ckpt_dir, loading.abstract_params(cfg))  # the slow part, after every check
  out = hf.export(
      params, cfg, args.out, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 1024**3),
      overwrite=args.overwrite, extra_files=extra_files,
      config_extra=hf_tokenizer.hf_generation_config(tokenizer) if tokenizer else None,
      generation_config=hf_tokenizer.hf_generation_config(tokenizer) if tokenizer else None,
      write_extra=lambda d: _write_extras(d, tokenizer, reasoning, meta.get('judge_format')))
  what = 'weights + tokenizer + chat template' if tokenizer else 'weights (no tokenizer recorded; see --tokenizer)'
  if not reasoning:
    what += f' (without {"/".join(added)}: the model has no rows for them)'
  if meta.get('judge_format'):
    what += f' + {JUDGE_FORMAT_FILE} (how to prompt this judge)'
  print(f'exported {hf.architecture(cfg)} ({cfg.param_count():,} parameters), {what} -> {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
