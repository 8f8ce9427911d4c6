"""How to prompt a judge: the rubric, spec view and length it was trained with, read from where its
training run recorded them (configs/judge.py writes them into the checkpoint meta; tools/export_hf.py
writes judge_format.json next to exported weights), with any non-empty field of the caller's judge
config taking precedence. The RL trainer and stage 1 both ask here, so a judge is never prompted
differently from how it learnt to grade (judge/load.py builds the judge with it)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from deliberative.weights import source

JUDGE_FORMAT_FILE = 'judge_format.json'
# A judge that records no format (a Hugging Face model from elsewhere, a GGUF file) is prompted as in
# the paper: spec(category) in full, the default rubric.
UNRECORDED_JUDGE_FORMAT = {'rubric': 'default', 'spec_view': 'full', 'max_len': 1536, 'answer_and_cot': False}
FORMAT_FIELDS = ('rubric', 'spec_view', 'max_len')


def given_fields(judge_config: Mapping) -> dict[str, Any]:
  """The format fields a judge config sets (empty = take the recorded value)."""
  return {k: judge_config[k] for k in FORMAT_FIELDS if judge_config[k]}


def unrecorded(judge_config: Mapping) -> dict[str, Any]:
  """The format of a judge that records none and is not looked up (a random-init judge, or none built
  yet): the paper's prompt with the config's non-empty fields."""
  return {**UNRECORDED_JUDGE_FORMAT, **given_fields(judge_config)}


def recorded_format(src: str | source.ModelSource) -> tuple[dict | None, dict]:
  """(judge_format record or None, checkpoint meta) of an Orbax judge or an exported HF one; a GGUF
  file or a Hugging Face model from elsewhere records none."""
  model = source.open_source(src, 'judge_init')
  if model.kind != 'orbax':
    path = os.path.join(model.directory, JUDGE_FORMAT_FILE)
    if model.kind == 'gguf' or not os.path.exists(path):
      return None, {}
    with open(path) as f:
      try:
        return json.load(f), {}
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e}); tools/export_hf.py writes this file') from e
  return model.meta.get('judge_format'), model.meta


def resolve(src: str | source.ModelSource, judge_config: Mapping, spec_version: str | None = None,
            log: Callable[[str], None] = print, *, sees_cot: bool = False) -> dict[str, Any]:
  """The format to prompt the judge at `src` (config.judge_init, or its opened source) with;
  `judge_config` holds the overrides (rubric, spec_view, max_len). `sees_cot`: the caller shows the
  judge the CoT as well (stage 1 may; the RL judge never does)."""
  model = source.open_source(src, 'judge_init')
  src = model.path  # the path as the user gave it, for the messages below
  recorded, meta = recorded_format(model)
  given = given_fields(judge_config)
  if recorded is None and meta.get('trainer') in ('sft', 'rl'):
    # A policy run was once taken silently as a zero-shot judge: it never learnt to grade.
    raise ValueError(f'config.judge_init={src!r} is an {meta["trainer"].upper()} run (a policy), not a judge; '
                     'train a judge with configs/judge.py, or give a base model (HF directory or GGUF) to '
                     'prompt as a zero-shot judge')
  if recorded is None and meta.get('trainer') == 'judge' and len(given) < len(FORMAT_FIELDS):
    # Trained here before formats were recorded: guessing the paper's prompt would grade with a
    # prompt the judge never saw.
    raise ValueError(f'config.judge_init={src!r} was trained by configs/judge.py but records no judge_format; '
                     'pass --config.judge.rubric, --config.judge.spec_view and --config.judge.max_len '
                     '(its config.json: judge.rubric, judge.spec_view, data.seq_len)')
  if recorded is not None:
    missing = [k for k in (*FORMAT_FIELDS, 'answer_and_cot') if k not in recorded]
    if missing:
      raise ValueError(f'config.judge_init={src!r}: its judge_format record lacks {missing} (has {sorted(recorded)})')
  trained_on = meta.get('spec_version')
  if spec_version and trained_on and trained_on != spec_version:
    log(f'warning: judge_init was trained against spec {trained_on}; this run grades against spec {spec_version}')
  fmt = dict(recorded or UNRECORDED_JUDGE_FORMAT)
  if fmt.get('answer_and_cot') and not sees_cot:
    raise ValueError(f'config.judge_init={src!r} was trained on answer+CoT inputs (judge.answer_and_cot=True), but '
                     'the RL judge sees the final answer only; train it with --config.judge.answer_and_cot=False')
  if recorded is not None and sees_cot and not fmt.get('answer_and_cot'):
    log('warning: judge_init was trained on final answers alone; it is shown the CoT as well')
  overridden = [k for k, v in given.items() if v != fmt[k]]
  for key in overridden:
    if recorded:
      log(f'warning: config.judge.{key}={given[key]!r} overrides {fmt[key]!r}, the value judge_init was trained with')
    fmt[key] = given[key]
  how = 'as judge_init was trained' if recorded else 'judge_init records none: the paper\'s prompt'
  if overridden:
    how += ', overridden: ' + ', '.join(f'config.judge.{k}' for k in overridden)
  log(f'judge format ({how}): rubric {fmt["rubric"]!r}, spec view {fmt["spec_view"]!r}, max_len {fmt["max_len"]}')
  return fmt


def for_source(src: str, judge_config: Mapping, spec_version: str | None = None, log: Callable[[str], None] = print,
               *, sees_cot: bool = False) -> dict[str, Any]:
  """`resolve` for a judge at `src`; '' (stage 1's random-init judge) is prompted as `unrecorded`."""
  if not src:
    return unrecorded(judge_config)
  return resolve(src, judge_config, spec_version, log=log, sees_cot=sees_cot)
