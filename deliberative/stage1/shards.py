"""The resumable workdir of a generate run, and its accounting.

  WORKDIR/manifest.json               config hash + hashed fields, spec version, prompt ids per shard, done shards
  WORKDIR/shards/shard-00000.jsonl    the kept trace records of shard 0
  WORKDIR/shards/shard-00000.outcomes.jsonl   one line per prompt of shard 0: what happened to it
  WORKDIR/summary.json                counts over every done shard (summarise; they add up or it raises)

Every file is written whole (common/io.py: a temporary name renamed over it locally, one upload
on an object store), and a shard counts as done only once the manifest says so, which is written
last: a run killed at any instant leaves either a done shard or one that is redone from scratch,
identically (per-prompt seeds). WORKDIR may be a URL (gs://...; common/storage.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from deliberative import config_lib
from deliberative.common import errors, io as atomic, storage

MANIFEST = 'manifest.json'
SUMMARY = 'summary.json'
OUTCOMES = ('kept', 'none_passed', 'too_long', 'endpoint_error')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  return atomic.read_jsonl(path)


def hashed_fields(config) -> dict[str, Any]:
  """The config fields that decide the records, flattened, JSON-normalised: all but those a resumed
  run may change (config_lib.GENERATE_RESUME_MAY_CHANGE, beside the trainers' list)."""
  flat = atomic.flatten(config.to_dict())
  keep = {k: v for k, v in flat.items()
          if not config_lib.may_change_on_resume(k, config_lib.GENERATE_RESUME_MAY_CHANGE)}
  return json.loads(json.dumps(keep, sort_keys=True, default=str))


def config_hash(config) -> str:
  return hashlib.sha256(json.dumps(hashed_fields(config), sort_keys=True).encode()).hexdigest()[:12]


def shard_path(workdir: str, index: int, kind: str = '') -> str:
  return storage.join(workdir, 'shards', f'shard-{index:05d}{kind}.jsonl')


class Manifest:
  """What a workdir was made with and how far it got."""

  def __init__(self, workdir: str, data: dict[str, Any]):
    self.workdir, self.data = workdir, data

  @property
  def path(self) -> str:
    return storage.join(self.workdir, MANIFEST)

  @property
  def shards(self) -> list[list[str]]:
    return self.data['shards']

  @property
  def done(self) -> set[int]:
    return set(self.data['done'])

  @classmethod
  def open(cls, workdir: str, config, spec_version: str, shards: Sequence[Sequence[str]]) -> Manifest:
    """The workdir's manifest, checked against this run; a new one for an empty workdir."""
    fields, digest = hashed_fields(config), config_hash(config)
    path = storage.join(workdir, MANIFEST)
    if not storage.exists(path):
      m = cls(workdir, {'config_hash': digest, 'config': fields, 'spec_version': spec_version,
                        'shards': [list(s) for s in shards], 'done': []})
      m.save()
      return m
    with storage.open(path, encoding='utf-8') as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise errors.RunError(f'{path}: not valid JSON ({e}); it is written atomically, so something else wrote '
                              'it: remove the workdir or choose another --workdir') from None
    if data.get('config_hash') != digest:
      old = data.get('config', {})
      diff = [f'{k} ({old.get(k, "<absent>")!r} -> {fields.get(k, "<absent>")!r})'
              for k in sorted(set(old) | set(fields)) if old.get(k) != fields.get(k)]
      raise errors.ConfigMismatch(
          f'{path}: this workdir was made with config hash {data.get("config_hash")}, this run has {digest}; '
          f'differing config fields: {", ".join(diff) or "(none recorded)"}. Resuming would mix records of two '
          'configs: use another --workdir, or the original config')
    if data.get('spec_version') != spec_version:
      raise errors.ConfigMismatch(f'{path}: made under spec {data.get("spec_version")}, this run has spec '
                                  f'{spec_version} (config.spec); use another --workdir')
    if data['shards'] != [list(s) for s in shards]:
      raise errors.ConfigMismatch(f'{path}: the prompts differ from the ones this workdir was started with '
                                  '(config.prompts: the same config read other records); use another --workdir')
    return cls(workdir, data)

  def save(self) -> None:
    atomic.write_json(self.path, self.data)

  def mark_done(self, index: int) -> None:
    self.data['done'] = sorted(self.done | {index})
    self.save()


# --- accounting -------------------------------------------------------------------------------

def _add(counter: dict, key: str, n: int = 1) -> None:
  counter[key] = counter.get(key, 0) + n


def summarise(outcomes: Sequence[Mapping[str, Any]], total_prompts: int) -> dict[str, Any]:
  """Counts over per-prompt outcomes, overall, per category and per decision; raises AssertionError
  (a bug, not a user error) when they do not add up."""
  keys = ('prompts', *OUTCOMES, 'completions', 'malformed', 'below_threshold', 'passed', 'judge_unparsed',
          'judge_truncated')
  totals = dict.fromkeys(keys, 0)
  per_category: dict[str, dict[str, int]] = {}
  per_decision: dict[str, dict[str, int]] = {}
  reasons: dict[str, int] = {}
  too_long, failed = [], {}
  for o in outcomes:
    cat = per_category.setdefault(o['category'], dict.fromkeys(keys, 0))
    for counter in (totals, cat):
      _add(counter, 'prompts')
      _add(counter, o['outcome'])
      for key in ('completions', 'malformed', 'below_threshold', 'passed', 'judge_unparsed', 'judge_truncated'):
        _add(counter, key, o.get(key, 0))
    for decision, counts in o.get('decisions', {}).items():
      d = per_decision.setdefault(decision, {'judged': 0, 'below_threshold': 0, 'passed': 0, 'kept': 0})
      for key, n in counts.items():
        _add(d, key, n)
    for reason, n in o.get('malformed_reasons', {}).items():
      _add(reasons, reason, n)
    if o['outcome'] == 'too_long':
      too_long.append({'id': o['id'], 'why': o.get('error', '')})
    elif o['outcome'] == 'endpoint_error':
      failed[o['id']] = o.get('error', '')
  summary = {**totals, 'prompts_planned': total_prompts,
             'yield': totals['kept'] / totals['prompts'] if totals['prompts'] else 0.0,
             'per_category': dict(sorted(per_category.items())), 'per_decision': dict(sorted(per_decision.items())),
             'malformed_reasons': dict(sorted(reasons.items())), 'too_long_ids': too_long,
             'endpoint_error_ids': failed}
  check(summary)
  return summary


def check(s: Mapping[str, Any]) -> None:
  """The accounting identities every summary satisfies."""
  def ok(cond: bool, what: str) -> None:
    if not cond:
      raise AssertionError(f'summary counts do not add up: {what}: {json.dumps(s, sort_keys=True)[:2000]}')
  for scope, c in [('total', s), *(('category ' + k, v) for k, v in s['per_category'].items())]:
    ok(c['prompts'] == sum(c[o] for o in OUTCOMES), f'{scope}: prompts = kept + none_passed + too_long + endpoint_error')
    ok(c['completions'] == c['malformed'] + c['below_threshold'] + c['passed'],
       f'{scope}: completions = malformed + below_threshold + passed')
    ok(c['kept'] <= c['passed'], f'{scope}: kept <= passed')
  for key in ('prompts', *OUTCOMES, 'completions', 'malformed', 'below_threshold', 'passed'):
    ok(sum(c[key] for c in s['per_category'].values()) == s[key], f'categories sum to the total {key}')
  decisions = s['per_decision'].values()
  ok(sum(d['kept'] for d in decisions) == s['kept'], 'decisions sum to kept')
  ok(sum(d['judged'] for d in decisions) == s['below_threshold'] + s['passed'], 'decisions sum to judged')
  ok(sum(d['passed'] for d in decisions) == s['passed'], 'decisions sum to passed')
  ok(sum(s['malformed_reasons'].values()) == s['malformed'], 'malformed reasons sum to malformed')
  ok(len(s['too_long_ids']) == s['too_long'] and len(s['endpoint_error_ids']) == s['endpoint_error'],
     'every too-long and failed prompt is listed')
  ok(s['prompts'] <= s['prompts_planned'], 'prompts <= planned')
