"""Evaluation suites: benchmark and project files read into one item type.

    suite = load_suite('xstest=/data/xstest_prompts.csv', limit=100)
    suite = load_suite('demo_jailbreak')            # the built demo dataset's held-out split
    for item in suite.items: item.prompt, item.role, item.group, item.wrapper ...

Suite specs (`NAME` or `NAME=PATH`):

    xstest=PATH        XSTest's xstest_prompts.csv (id,prompt,type,label[,focus,note]); label
                       `safe` rows measure not_overrefuse, `unsafe` ones (the `contrast_*`
                       types) not_unsafe
    strongreject=PATH  StrongREJECT's CSV (category,source,forbidden_prompt); every forbidden
                       prompt alone (wrapper `none`) and inside each held-out jailbreak wrapper
                       of assets/evals/jailbreak_wrappers.json; `group` is the prompt
    advbench=PATH      AdvBench's harmful_behaviors.csv (goal,target): refusal rate
    jsonl=PATH         records of the project's schema (data/schema.py), prompt-only allowed,
                       with `category`, the expected `decision` and optionally `clause_ids`
                       (a list, or ids separated by spaces or commas); `spec_version` and
                       `source` may be left out
    demo, demo_overrefuse, demo_jailbreak
                       the demo's held-out splits eval, eval_overrefuse, eval_jailbreak; from
                       the built demo dataset (built on first use, as training does), or
                       `demo=PATH` with PATH a built dataset version dir or a folder of the
                       generator's `<split>.jsonl` files

`limit` keeps a deterministic, stratified subset (see `take_limit`): for xstest N prompts split
evenly between safe and unsafe and, within each, spread round-robin over the `type`s; for
strongreject and demo_jailbreak N base prompts (each with all its wrappers; `wrapper_limit`
keeps the first W wrappers, which are of W different kinds); for demo and jsonl N records
spread over the expected decisions, then categories; for advbench the first N rows.

A file in the wrong format raises SuiteFormatError naming file, line and column. The project
never requires the benchmark files; they are read only when a suite names them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deliberative.common.errors import RunError

# What a metric does with an item: `safe` prompts should be answered (not_overrefuse),
# `unsafe` ones refused or safe-completed (not_unsafe).
ROLES = ('safe', 'unsafe')
SUITES = ('xstest', 'strongreject', 'advbench', 'jsonl', 'demo', 'demo_overrefuse', 'demo_jailbreak')
DEMO_SPLITS = {'demo': 'eval', 'demo_overrefuse': 'eval_overrefuse', 'demo_jailbreak': 'eval_jailbreak'}
# The grader each suite is scored by unless `evaluate --grader` names others (names as in graders.py).
# strongreject: the binary string-match goodness until a rubric grader (convincing, specific) exists.
# jsonl: a user's file comes with no grader, and a model grader needs a model (`--grader model:PATH`):
# string-match refusal (decisions refuse / comply) runs anywhere.
DEFAULT_GRADERS = {'xstest': 'string_match', 'strongreject': 'string_match', 'advbench': 'string_match',
                   'jsonl': 'string_match', 'demo': 'demo', 'demo_overrefuse': 'demo', 'demo_jailbreak': 'demo'}
# The metrics each suite reports (metrics.py names).
SUITE_METRICS = {
    'xstest': ('not_overrefuse', 'not_unsafe', 'refusal_rate'),
    'strongreject': ('not_unsafe', 'strongreject_score', 'goodness', 'goodness@0.1'),
    'advbench': ('refusal_rate',),
    'jsonl': ('decision_accuracy', 'citation_accuracy', 'not_overrefuse', 'not_unsafe'),
    'demo': ('decision_accuracy', 'citation_accuracy', 'format_validity', 'not_overrefuse', 'not_unsafe'),
    'demo_overrefuse': ('not_overrefuse', 'decision_accuracy'),
    'demo_jailbreak': ('not_unsafe', 'goodness@0.1', 'decision_accuracy'),
}
BARE_WRAPPER = 'none'  # the wrapper id of a prompt asked as it is
WRAPPERS_PATH = Path(__file__).resolve().parent.parent / 'assets' / 'evals' / 'jailbreak_wrappers.json'


class SuiteFormatError(RunError, ValueError):
  """An evaluation file that is not in its suite's format; the message starts with `file:line:`."""


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One prompt to answer and what its metrics expect of the answer."""

  id: str  # unique within the suite
  prompt: str  # the user's turn as the model sees it (wrapped, if a wrapper applies)
  suite: str
  role: str  # one of ROLES
  category: str | None = None  # the spec category, where the file gives one
  decision: str | None = None  # the expected decision, where the file gives one
  clause_ids: tuple[str, ...] = ()  # governing clauses, where the file gives them
  group: str | None = None  # the base prompt's id for wrapped prompts (goodness@0.1 groups by it)
  wrapper: str | None = None  # the jailbreak wrapper's id (BARE_WRAPPER for the prompt alone)
  messages: tuple[tuple[str, str], ...] = ()  # (role, content) turns when the file gave several
  where: str = ''  # file:line it came from
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the file's other fields

  def record(self) -> dict[str, Any]:
    """The item as a schema-like record (what generation and the graders read)."""
    out = {'id': self.id, 'prompt': self.prompt, 'category': self.category, 'decision': self.decision,
           'clause_ids': list(self.clause_ids), 'role': self.role, 'suite': self.suite}
    out['messages'] = ([{'role': r, 'content': c} for r, c in self.messages] if self.messages
                       else [{'role': 'user', 'content': self.prompt}])
    if self.group is not None:
      out['base_id'] = self.group
    if self.wrapper is not None:
      out['jailbreak_id'] = self.wrapper
    return out


@dataclasses.dataclass
class Suite:
  name: str  # one of SUITES
  path: str | None  # the file or dataset read ('' for the default demo dataset)
  items: list[EvalItem]
  default_grader: str
  metrics: tuple[str, ...]
  notes: list[str] = dataclasses.field(default_factory=list)  # what was read, subset taken

  @property
  def grouped(self) -> bool:
    return any(item.group is not None for item in self.items)


@dataclasses.dataclass(frozen=True)
class Wrapper:
  id: str
  kind: str
  template: str  # holds `{prompt}` once

  def wrap(self, prompt: str) -> str:
    return self.template.replace('{prompt}', prompt)


def parse_suite_spec(spec: str) -> tuple[str, str | None]:
  """'xstest=PATH' -> ('xstest', 'PATH'); 'demo' -> ('demo', None)."""
  name, sep, path = spec.partition('=')
  name = name.strip()
  if name not in SUITES:
    raise ValueError(f'unknown suite {name!r} in {spec!r}; valid: {", ".join(SUITES)} (file suites as NAME=PATH)')
  if sep and not path.strip():
    raise ValueError(f'suite {spec!r}: empty path after "="')
  if not sep and name in ('xstest', 'strongreject', 'advbench', 'jsonl'):
    raise ValueError(f'suite {name!r} reads a file: give it as {name}=PATH')
  return name, (path.strip() if sep else None)


def load_suite(spec: str, *, limit: int | None = None, wrapper_limit: int | None = None,
               data_dir: str | None = None, wrappers: Sequence[Wrapper] | None = None) -> Suite:
  """The items of one suite spec (see the module docstring), cut to `limit` if given."""
  name, path = parse_suite_spec(spec)
  if limit is not None and limit < 1:
    raise ValueError(f'limit={limit}: must be at least 1')
  if name == 'xstest':
    items = read_xstest(path)
  elif name == 'strongreject':
    wrappers = list(wrappers) if wrappers is not None else load_wrappers()
    if wrapper_limit is not None:
      if wrapper_limit < 0:
        raise ValueError(f'wrapper_limit={wrapper_limit}: must be at least 0')
      wrappers = wrappers[:wrapper_limit]
    items = read_strongreject(path, wrappers)
  elif name == 'advbench':
    items = read_advbench(path)
  elif name == 'jsonl':
    items = read_jsonl_suite(path)
  else:
    items = read_demo_suite(name, path, data_dir=data_dir)
    if name == 'demo_jailbreak' and wrapper_limit is not None:
      kept = list(dict.fromkeys(i.wrapper for i in items))[:wrapper_limit]
      items = [i for i in items if i.wrapper in kept]
  total = len(items)
  if limit is not None:
    items = take_limit(items, limit, by_role=name != 'advbench', sub_key=_SUB_KEYS.get(name))
  if not items:
    raise SuiteFormatError(f'{path or name}: no items to evaluate')
  suite = Suite(name=name, path=path if path is not None else '', items=items, default_grader=DEFAULT_GRADERS[name],
                metrics=SUITE_METRICS[name])
  groups = len({i.group for i in items if i.group is not None})
  roles = ', '.join(f'{sum(i.role == r for i in items)} {r}' for r in ROLES)
  suite.notes.append(f'{name}: {len(items)} of {total} items ({roles})' + (f', {groups} base prompts' if groups else '')
                     + (f'; limit {limit}' if limit is not None else ''))
  return suite


# ---- the subset kept by --limit

def _item_type(item: EvalItem) -> str:
  return str(item.extra.get('type', ''))


def _decision_category(item: EvalItem) -> str:
  return f'{item.decision}/{item.category}'


def _benchmark_category(item: EvalItem) -> str:
  return str(item.extra.get('benchmark_category', ''))


_SUB_KEYS: dict[str, Callable[[EvalItem], str]] = {
    'xstest': _item_type, 'strongreject': _benchmark_category, 'jsonl': _decision_category,
    'demo': _decision_category, 'demo_overrefuse': _decision_category, 'demo_jailbreak': _decision_category}


def _round_robin(units: list[list[EvalItem]], key: Callable[[EvalItem], str] | None) -> list[list[EvalItem]]:
  """Units reordered so that consecutive ones cycle through the values of `key` (file order within each)."""
  if key is None:
    return units
  buckets: dict[str, list[list[EvalItem]]] = {}
  for unit in units:
    buckets.setdefault(key(unit[0]), []).append(unit)
  out = []
  for k in range(max(len(b) for b in buckets.values())):
    out.extend(b[k] for b in buckets.values() if k < len(b))
  return out


def take_limit(items: Sequence[EvalItem], limit: int, *, by_role: bool = True,
               sub_key: Callable[[EvalItem], str] | None = None) -> list[EvalItem]:
  """A deterministic subset of `limit` units (an item, or a base prompt with all its wrappers).

  Units are split as evenly as the data allows between roles (when `by_role`; a role with too
  few units leaves its share to the others), and within a role taken round-robin over
  `sub_key` (e.g. XSTest's type) in file order. The kept items stay in file order.
  """
  units: dict[str, list[EvalItem]] = {}
  for item in items:
    units.setdefault(item.group if item.group is not None else f'\0{item.id}', []).append(item)
  strata: dict[str, list[list[EvalItem]]] = {}
  for unit in units.values():
    strata.setdefault(unit[0].role if by_role else '', []).append(unit)
  ordered = {s: _round_robin(u, sub_key) for s, u in strata.items()}
  quota = {s: 0 for s in ordered}
  left = min(limit, len(units))
  while left:  # one unit at a time to each stratum that still has some: an even split
    for s in ordered:
      if left and quota[s] < len(ordered[s]):
        quota[s] += 1
        left -= 1
  kept = {id(item) for s, us in ordered.items() for unit in us[:quota[s]] for item in unit}
  return [item for item in items if id(item) in kept]


# ---- CSV files

def _read_text(path: Path) -> str:
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise SuiteFormatError(f'{path}: no such file') from None
  except IsADirectoryError:
    raise SuiteFormatError(f'{path}: is a directory, expected a file') from None
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    column = e.start - (data.rfind(b'\n', 0, e.start) + 1) + 1
    raise SuiteFormatError(f'{path}:{line}: column {column}: not valid UTF-8 (byte 0x{data[e.start]:02x}); '
                           're-save the file as UTF-8') from None


def _read_csv(path: str | Path, required: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
  """(line, row) for each data row; refuses a missing column, a short or long row, a blank cell."""
  path = Path(path)
  text = _read_text(path)
  reader = csv.reader(io.StringIO(text, newline=''))
  try:
    header = next(reader)
  except StopIteration:
    raise SuiteFormatError(f'{path}:1: empty file, expected a {what} CSV with columns {", ".join(required)}') from None
  except csv.Error as e:
    raise SuiteFormatError(f'{path}:1: not a CSV file: {e}') from None
  header = [h.strip() for h in header]
  missing = [c for c in required if c not in header]
  if missing:
    plural = 's' if len(missing) > 1 else ''
    raise SuiteFormatError(f'{path}:1: missing column{plural} {", ".join(map(repr, missing))}; '
                           f'a {what} CSV has columns {", ".join(required)} (found: {", ".join(header) or "none"})')
  rows = []
  while True:
    line = reader.line_num + 1  # where the next row starts (a quoted cell may span lines)
    try:
      cells = next(reader)
    except StopIteration:
      break
    except csv.Error as e:
      raise SuiteFormatError(f'{path}:{reader.line_num}: malformed CSV: {e}') from None
    if not any(c.strip() for c in cells):
      continue  # a blank line
    if len(cells) != len(header):
      raise SuiteFormatError(f'{path}:{line}: expected {len(header)} fields ({", ".join(header)}), got {len(cells)}; '
                             'quote cells that hold commas')
    row = dict(zip(header, cells))
    for column in required:
      if not row[column].strip():
        raise SuiteFormatError(f'{path}:{line}: column {header.index(column) + 1} ({column!r}): empty')
    rows.append((line, row))
  if not rows:
    raise SuiteFormatError(f'{path}: no rows after the header')
  return rows


def _column(path, line: int, header_row: Mapping[str, str], column: str) -> str:
  return f'{path}:{line}: column {list(header_row).index(column) + 1} ({column!r})'


def _unique(path, line: int, seen: dict[str, int], item_id: str) -> None:
  if item_id in seen:
    raise SuiteFormatError(f'{path}:{line}: duplicate id {item_id!r} (first on line {seen[item_id]})')
  seen[item_id] = line


def read_xstest(path: str | Path) -> list[EvalItem]:
  """XSTest's prompts: `safe` rows answer-worthy, `unsafe` (contrast_*) rows to be refused."""
  items, seen = [], {}
  for line, row in _read_csv(path, ('id', 'prompt', 'type', 'label'), 'XSTest'):
    label = row['label'].strip()
    if label not in ROLES:
      raise SuiteFormatError(f'{_column(path, line, row, "label")}: unknown label {label!r}; expected safe or unsafe')
    contrast = row['type'].strip().startswith('contrast_')
    if contrast != (label == 'unsafe'):
      raise SuiteFormatError(f'{_column(path, line, row, "label")}: label {label!r} does not fit type '
                             f'{row["type"]!r} (XSTest labels exactly the contrast_* types unsafe)')
    item_id = f'xstest-{row["id"].strip()}'
    _unique(path, line, seen, item_id)
    extra = {k: v for k, v in row.items() if k not in ('id', 'prompt', 'label')}
    items.append(EvalItem(id=item_id, prompt=row['prompt'].strip(), suite='xstest', role=label,
                          decision='comply' if label == 'safe' else None, where=f'{path}:{line}', extra=extra))
  return items


def load_wrappers(path: str | Path = WRAPPERS_PATH) -> list[Wrapper]:
  """The held-out jailbreak wrappers (a JSON file: {"wrappers": [{id, kind, template}, ...]})."""
  path = Path(path)
  text = _read_text(path)
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise SuiteFormatError(f'{path}:{e.lineno}: column {e.colno}: invalid JSON: {e.msg}') from None
  entries = data.get('wrappers') if isinstance(data, dict) else None
  if not isinstance(entries, list):
    raise SuiteFormatError(f'{path}: expected an object with a list "wrappers"')
  wrappers, seen = [], set()
  for k, entry in enumerate(entries):
    where = f'{path}: wrappers[{k}]'
    if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) and entry[f].strip()
                                              for f in ('id', 'kind', 'template')):
      raise SuiteFormatError(f'{where}: expected non-empty strings id, kind and template')
    if entry['template'].count('{prompt}') != 1:
      raise SuiteFormatError(f'{where} ({entry["id"]}): the template must hold {{prompt}} exactly once')
    if entry['id'] in seen or entry['id'] == BARE_WRAPPER:
      raise SuiteFormatError(f'{where}: id {entry["id"]!r} repeats or is reserved')
    seen.add(entry['id'])
    wrappers.append(Wrapper(entry['id'], entry['kind'], entry['template']))
  return wrappers


def read_strongreject(path: str | Path, wrappers: Sequence[Wrapper] | None = None) -> list[EvalItem]:
  """Each forbidden prompt alone, then inside every wrapper; all unsafe, grouped by prompt."""
  wrappers = load_wrappers() if wrappers is None else wrappers
  items = []
  for n, (line, row) in enumerate(_read_csv(path, ('category', 'source', 'forbidden_prompt'), 'StrongREJECT'), 1):
    base_id = f'strongreject-{n:04d}'
    prompt = row['forbidden_prompt'].strip()
    extra = {'benchmark_category': row['category'].strip(), 'benchmark_source': row['source'].strip()}
    items.append(EvalItem(id=base_id, prompt=prompt, suite='strongreject', role='unsafe', group=base_id,
                          wrapper=BARE_WRAPPER, where=f'{path}:{line}', extra=extra))
    for w in wrappers:
      items.append(EvalItem(id=f'{base_id}+{w.id}', prompt=w.wrap(prompt), suite='strongreject', role='unsafe',
                            group=base_id, wrapper=w.id, where=f'{path}:{line}',
                            extra={**extra, 'wrapper_kind': w.kind, 'base_prompt': prompt}))
  return items


def read_advbench(path: str | Path) -> list[EvalItem]:
  """AdvBench's harmful behaviours: every goal is to be refused."""
  return [EvalItem(id=f'advbench-{n:04d}', prompt=row['goal'].strip(), suite='advbench', role='unsafe',
                   where=f'{path}:{line}', extra={'target': row['target']})
          for n, (line, row) in enumerate(_read_csv(path, ('goal', 'target'), 'AdvBench'), 1)]


# ---- JSONL files of the project's schema

def _clause_ids(value: Any, where: str) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(i for i in value.replace(',', ' ').split() if i)
  if isinstance(value, list) and all(isinstance(i, str) for i in value):
    return tuple(i.strip() for i in value if i.strip())
  raise SuiteFormatError(f"{where}: field 'clause_ids': expected a list of strings or a space-separated string, "
                         f'got {value!r}')


def _role(decision: str) -> str:
  return 'safe' if decision == 'comply' else 'unsafe'


def item_from_record(record: Mapping[str, Any], suite: str, where: str) -> EvalItem:
  """A validated schema record -> an item; `base_id`/`jailbreak_id` (demo_jailbreak) make its group."""
  decision = record['decision']
  messages = tuple((m['role'], m['content']) for m in record['messages'])
  base_id = record.get('base_id') or None
  wrapper = record.get('jailbreak_id') or None
  known = {'id', 'prompt', 'messages', 'category', 'decision', 'clause_ids', 'base_id', 'jailbreak_id',
           'cot', 'answer', 'score'}
  return EvalItem(id=record['id'], prompt=record['prompt'], suite=suite, role=_role(decision),
                  category=record['category'], decision=decision,
                  clause_ids=_clause_ids(record.get('clause_ids'), where), group=base_id,
                  wrapper=wrapper if base_id else None, messages=messages if len(messages) > 1 else (),
                  where=where, extra={k: v for k, v in record.items() if k not in known})


def read_jsonl_records(path: str | Path, *, fill_provenance: bool = True) -> list[tuple[str, dict[str, Any]]]:
  """(file:line, validated record) for each line of a JSONL file of the project's schema."""
  from deliberative.data import schema  # noqa: the schema module, not the demo generator

  path = Path(path)
  if path.is_dir():
    raise SuiteFormatError(f'{path}: is a directory; the jsonl suite reads one file')
  text = _read_text(path)
  out, seen = [], {}
  for line_no, line in enumerate(text.split('\n'), 1):  # not splitlines: U+2028 may sit in a string
    if not line.strip():
      continue
    where = f'{path}:{line_no}'
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise SuiteFormatError(f'{where}: column {e.colno}: invalid JSON: {e.msg}') from None
    if fill_provenance and isinstance(obj, dict):
      # An eval file need not say which spec or generator made it.
      obj.setdefault('spec_version', 'unknown')
      obj.setdefault('source', str(path))
    try:
      record = schema.validate_record(obj, where)
    except schema.SchemaError as e:
      raise SuiteFormatError(str(e)) from None
    _unique(path, line_no, seen, record['id'])
    out.append((where, record))
  if not out:
    raise SuiteFormatError(f'{path}: empty (no records)')
  return out


def read_jsonl_suite(path: str | Path) -> list[EvalItem]:
  return [item_from_record(r, 'jsonl', where) for where, r in read_jsonl_records(path)]


# ---- the demo's held-out splits

def read_dataset_split(split: str, path: str | Path | None = None, *, data_dir: str | None = None,
                       ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
  """(where, [(place, record)]) of one split of the demo dataset (or of any built dataset).

  `path` None: the built demo dataset under `data_dir` (built on first use by the data
  package). A folder with `<split>.jsonl`: that file. A built dataset version dir: its split.
  """
  if path is not None:
    folder = Path(path)
    jsonl = folder / f'{split}.jsonl'
    if jsonl.is_file():
      return str(jsonl), read_jsonl_records(jsonl, fill_provenance=False)
    if not (folder / 'dataset_info.json').exists():
      raise SuiteFormatError(f'{folder}: neither a folder with {split}.jsonl nor a built dataset '
                             '(no dataset_info.json)')
    version_dir = folder
  else:
    from deliberative.data import datasets  # builds the demo on first use, as training does
    version_dir = datasets.resolve_dataset(data_dir, datasets.DEMO_DATASET)
  from deliberative.data import tfds_builder

  counts = tfds_builder.split_counts(version_dir)
  if split not in counts:
    raise SuiteFormatError(f'{version_dir}: no split {split!r} (splits: {", ".join(sorted(counts))})')
  source = tfds_builder.open_source(version_dir, split)
  where = f'{version_dir}[{split}]'
  return where, [(f'{where}#{k}', tfds_builder.record_from_example(source[k])) for k in range(len(source))]


def read_demo_suite(name: str, path: str | Path | None = None, *, data_dir: str | None = None) -> list[EvalItem]:
  _, records = read_dataset_split(DEMO_SPLITS[name], path, data_dir=data_dir)
  items = [item_from_record(r, name, where) for where, r in records]
  if name == 'demo_jailbreak':
    loose = [i.id for i in items if i.group is None]
    if loose:
      where = items[0].where.split('#')[0]
      raise SuiteFormatError(f'{where}: {len(loose)} record(s) without base_id (e.g. {loose[0]}); '
                             'demo_jailbreak groups the wrappers of one prompt by base_id')
  return items


def read_split_records(split: str = 'train', path: str | Path | None = None, *,
                       data_dir: str | None = None) -> list[dict[str, Any]]:
  """A split's records (e.g. the training traces the memorisation baseline looks up), read as
  read_dataset_split does: the built demo dataset, a built dataset version dir, or a folder
  of `<split>.jsonl` files."""
  return [record for _, record in read_dataset_split(split, path, data_dir=data_dir)[1]]
