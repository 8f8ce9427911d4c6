"""What a checkpoint records of its run, and the check that a resumed run is the same run.

Every checkpoint's meta holds the resolved config, the architecture, the spec version and the
tokenizer's fingerprint (`run_meta`). Before a run writes anything into a workdir that already
holds checkpoints, `check_resume` compares them with the config it was given:
- a difference that changes the math (architecture, tokenizer, spec, data, optimizer, ...) is a
  ConfigMismatch naming every such field with both values (`--allow_config_change=FIELD,...`
  accepts named ones deliberately);
- a difference that does not (log cadence, eval sizes, checkpoint cadence, the mesh layout) is
  one note line.
Only then is `config.json` written; the one it replaces is kept as `config.<step>.json`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

from deliberative import config_lib
from deliberative.common import io as atomic, storage
from deliberative.common.errors import ConfigMismatch
from deliberative.weights import source
from deliberative.model.config import ModelConfig
from deliberative.spec import Spec
from deliberative.tokenizer.sentencepiece import Tokenizer
from deliberative.trainers import runtime
from deliberative.trainers import checkpointing
from deliberative.trainers.checkpointing import read_json_item

# The fields a resume may change: config_lib.TRAIN_RESUME_MAY_CHANGE (beside stage 1's, one place).
_NOTES = {'total_steps': 'the learning-rate schedule follows the new total from here on'}
# Architecture fields that only say how the computation is arranged, not what it computes
# (a checkpoint saved with either scan_layers restores into the other: trainers/checkpointing.py).
_LAYOUT_MODEL_FIELDS = ('remat', 'scan_layers')


def run_meta(config, model_cfg: ModelConfig, spec: Spec, tokenizer: Tokenizer, sources=None,
             **extra) -> dict[str, Any]:
  """What every checkpoint of a run records: enough to check a resume and to read it alone.
  `sources`: the run's opened models (loop.Run.sources)."""
  tokenizer_path = source.run_tokenizer_path(config, sources)
  return {'model': model_cfg.to_dict(), 'trainer': config.trainer, 'spec_version': spec.version,
          'tokenizer_vocab_size': tokenizer.vocab_size, 'tokenizer_version': tokenizer.version,
          # what export_hf writes next to the weights ('default' = the packaged model; a Hugging
          # Face directory or GGUF file = that model's own tokenizer, with any added tokens)
          'tokenizer': tokenizer_path, 'tokenizer_info': source.tokenizer_record(tokenizer, tokenizer_path),
          'init_from': config.init_from or None if 'init_from' in config else None,
          'config': plain(config.to_dict()), **extra}


def plain(tree: Any) -> Any:
  """A config dict as JSON gives it back (tuples become lists), so recorded and current compare equal."""
  return json.loads(json.dumps(tree, default=atomic.json_default))


def _harmless(field: str) -> bool:
  return config_lib.may_change_on_resume(field, config_lib.TRAIN_RESUME_MAY_CHANGE)


def newest_meta(ckpt_dir: str) -> tuple[int, dict] | None:
  """(step, meta) of the newest checkpoint whose meta reads; the restore reports unreadable ones."""
  if not storage.isdir(ckpt_dir):
    return None
  steps = sorted((int(d) for d in storage.listdir(ckpt_dir) if d.isdigit()), reverse=True)
  for step in steps:
    try:
      return step, read_json_item(ckpt_dir, step, 'meta')
    except ValueError:
      continue
  return None


def differences(config, meta: Mapping, model_cfg: ModelConfig, spec: Spec, tokenizer: Tokenizer,
                recorded_config: Mapping | None = None) -> dict[str, tuple[Any, Any]]:
  """field -> (checkpoint's value, this config's value) for everything that differs."""
  diffs: dict[str, tuple[Any, Any]] = {}
  recorded_config = meta.get('config') if isinstance(meta.get('config'), Mapping) else recorded_config
  if recorded_config is not None:
    old, new = atomic.flatten(recorded_config), atomic.flatten(plain(config.to_dict()))
    for key in sorted(set(old) | set(new)):
      if old.get(key) != new.get(key):
        diffs[key] = (old.get(key, '<absent>'), new.get(key, '<absent>'))
  # What the config resolves to, against what the checkpoint records: a file behind an unchanged
  # path (the spec, the tokenizer, init_from's architecture) may have changed.
  if isinstance(meta.get('model'), Mapping):
    now = model_cfg.to_dict()
    for key, was in meta['model'].items():
      if key not in _LAYOUT_MODEL_FIELDS and plain(now.get(key)) != plain(was):
        diffs.setdefault(f'model.{key}', (was, now.get(key)))
  if meta.get('spec_version') not in (None, spec.version):
    diffs['spec.version'] = (meta['spec_version'], spec.version)
  if meta.get('tokenizer_version') not in (None, tokenizer.version):
    diffs['tokenizer.version'] = (meta['tokenizer_version'], tokenizer.version)
  if meta.get('tokenizer_vocab_size') not in (None, tokenizer.vocab_size):
    diffs['tokenizer.vocab_size'] = (meta['tokenizer_vocab_size'], tokenizer.vocab_size)
  return diffs


def check_resume(config, workdir: str, model_config: Callable[[Any], ModelConfig], allowed: Iterable[str] = (),
                 log: Callable[[str], None] = runtime.log) -> int | None:
  """Compares the workdir's newest checkpoint with `config`; returns its step (None: nothing to resume)."""
  found = newest_meta(checkpointing.checkpoint_dir(workdir))
  if found is None:
    return None
  step, meta = found
  recorded = None
  if 'config' not in meta:  # checkpoints written before configs were recorded: the run's config.json
    recorded = _read_json(os.path.join(workdir, 'config.json'))
    log(f'note: checkpoint step {step} records no config; comparing with '
        f'{"config.json" if recorded else "nothing but its architecture, spec and tokenizer"}')
  diffs = differences(config, meta, model_config(config), Spec.load(config.spec or None),
                      source.run_tokenizer(config), recorded)
  allowed = set(allowed)
  errors = {k: v for k, v in diffs.items() if not _harmless(k) and k not in allowed}
  notes = {k: v for k, v in diffs.items() if k not in errors}
  where = storage.join(checkpointing.checkpoint_dir(workdir), str(step))
  if errors:
    lines = '; '.join(f'{k}: {old!r} in the checkpoint vs {new!r} now' for k, (old, new) in errors.items())
    raise ConfigMismatch(
        f'{where}: this config differs from the run it would resume in fields that change the math: {lines}. '
        f'Use another --workdir, or --allow_config_change={",".join(errors)} to continue anyway')
  for key, (old, new) in notes.items():
    why = _NOTES.get(key, 'allowed by --allow_config_change' if key in allowed else 'does not change the math')
    log(f'note: resuming {where} with {key}={new!r} (was {old!r}): {why}')
  return step


def write_config(config, workdir: str, resumed_step: int | None) -> None:
  """config.json for this run; a different earlier one is kept as config.<step>.json, never overwritten."""
  if not runtime.is_main_process():  # one writer; the others must not race it for the old file
    return
  path = storage.join(workdir, 'config.json')
  new = plain(config.to_dict())
  if storage.exists(path) and _read_json(path) != new:
    base = storage.join(workdir, f'config.{resumed_step or 0}')
    keep, n = f'{base}.json', 1
    while storage.exists(keep):
      keep, n = f'{base}.{n}.json', n + 1
    storage.replace(path, keep)
  runtime.write_json_atomic(path, new)


def _read_json(path: str) -> Any:
  try:
    with storage.open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError):
    return None
