"""Reads and validates the demo generator's data files, `deliberative/assets/demo/*.yaml`.

The files hold every word of the demo (templates, fillers, jailbreak wrappers, answer and
CoT phrasings); the modules of deliberative/data/demo/ hold only how they are combined. A file that does not
fit is refused with an `AssetError` naming the file and the field, e.g.
`cells_care.yaml: cells[2].fillers.heldout[0].answer: expected a non-empty string`.

    node = root('styles.yaml')                  # a validated view of one file
    refusals = node['answers']['refusals'].split()   # (train texts, held-out texts)
    version = content_hash()                    # changes whenever any file's bytes change
"""

from __future__ import annotations

import functools
import hashlib
import string
from pathlib import Path
from typing import Any

import yaml

from deliberative.data.demo.cells import Cell, Filler

ASSET_DIR = Path(__file__).resolve().parents[2] / 'assets' / 'demo'  # deliberative/assets/demo

__all__ = ['ASSET_DIR', 'AssetError', 'Node', 'content_hash', 'load_cells', 'root']


class AssetError(ValueError):
  """A demo data file that does not fit what the generator expects."""


def asset_files() -> list[Path]:
  return sorted(ASSET_DIR.glob('*.yaml'))


def content_hash() -> str:
  """sha256 (12 hex digits) of every asset file's name and bytes: the data's version."""
  digest = hashlib.sha256()
  for path in asset_files():
    digest.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
  return digest.hexdigest()[:12]


class Node:
  """One value of a data file, with where it came from, so errors can say so."""

  def __init__(self, value: Any, file: str, field: str = ''):
    self.value, self.file, self.field = value, file, field

  def error(self, message: str) -> AssetError:
    return AssetError(f'{self.file}: {self.field or "(top level)"}: {message}')

  def _child(self, value: Any, key: str | int) -> Node:
    if isinstance(key, int):
      return Node(value, self.file, f'{self.field}[{key}]')
    return Node(value, self.file, f'{self.field}.{key}' if self.field else key)

  def __getitem__(self, key: str) -> Node:
    mapping = self.mapping()
    if key not in mapping:
      raise self._child(None, key).error('missing')
    return mapping[key]

  def get(self, key: str, default: Any = None) -> Node:
    return self.mapping().get(key, self._child(default, key))

  def mapping(self) -> dict[str, Node]:
    if not isinstance(self.value, dict):
      raise self.error(f'expected a mapping, got {type(self.value).__name__}')
    for key in self.value:
      if not isinstance(key, str):
        raise self.error(f'keys must be strings, got {key!r}')
    return {k: self._child(v, k) for k, v in self.value.items()}

  def items(self, nonempty: bool = True) -> list[Node]:
    if not isinstance(self.value, list):
      raise self.error(f'expected a list, got {type(self.value).__name__}')
    if nonempty and not self.value:
      raise self.error('expected at least one entry')
    return [self._child(v, i) for i, v in enumerate(self.value)]

  def text(self, fields: frozenset[str] | set[str] = frozenset(), allow_empty: bool = False) -> str:
    """A string whose `str.format` fields are all in `fields` (so a typo in a placeholder
    fails here, not as a KeyError deep in generation)."""
    if not isinstance(self.value, str) or (not self.value and not allow_empty):
      raise self.error(f'expected a non-empty string, got {self.value!r}')
    try:
      used = {name for _, name, _, _ in string.Formatter().parse(self.value) if name is not None}
    except ValueError as e:
      raise self.error(f'bad format string {self.value!r}: {e}') from None
    if not used <= set(fields):
      raise self.error(f'unknown placeholder(s) {sorted(used - set(fields))} in {self.value!r}; '
                       f'allowed: {sorted(fields)}')
    return self.value

  def texts(self, fields: frozenset[str] | set[str] = frozenset(),
            allow_empty: bool = False) -> tuple[str, ...]:
    return tuple(item.text(fields, allow_empty) for item in self.items())

  def split(self, fields: frozenset[str] | set[str] = frozenset(),
            allow_empty: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train texts, held-out texts) of a {train: [...], heldout: [...]} table; the two
    sides may not share a text, or held-out would not be held out."""
    train = self['train'].texts(fields, allow_empty)
    heldout = self['heldout'].texts(fields, allow_empty)
    shared = set(train) & set(heldout)
    if shared:
      raise self['heldout'].error(f'also in train: {sorted(shared)}')
    return train, heldout


@functools.cache
def _parsed(name: str) -> Any:
  path = ASSET_DIR / name
  try:
    with open(path, encoding='utf-8') as f:
      return yaml.safe_load(f)
  except FileNotFoundError:
    raise AssetError(f'{name}: missing demo data file {path}') from None
  except yaml.YAMLError as e:
    raise AssetError(f'{name}: not valid YAML: {e}') from None


def root(name: str) -> Node:
  """The top-level mapping of `assets/demo/<name>` (parsed once per process)."""
  node = Node(_parsed(name), name)
  node.mapping()
  return node


# --- cells -------------------------------------------------------------------------------
DECISIONS = ('comply', 'refuse', 'safe_complete')
KINDS = ('policy', 'benign', 'lookalike')


def _template_slots(node: Node, text: str) -> set[str]:
  slots = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
  if len(slots) != 1:
    raise node.error(f'a template fills exactly one slot, found {sorted(slots)} in {text!r}')
  return slots


def _required_slots(cell: dict, kind: str) -> set[str]:
  """Slots a filler needs besides the template's: what demo.styles writes CoTs and answers
  from (a `gist` to paraphrase, an `answer` to give, a `domain` or `reflect` to mirror)."""
  decision, category = cell['decision'], cell['category']
  if decision == 'comply':
    return {'answer', 'trigger', 'reading'} if kind == 'lookalike' else {'answer'}
  if decision == 'refuse':
    return {'gist'}
  return {'gist', 'domain', 'answer'} if category == 'regulated_advice' else {'gist', 'reflect'}


def _filler(node: Node, required: set[str]) -> Filler:
  values = {key: child.text() for key, child in node.mapping().items()}
  missing = required - set(values)
  if missing:
    raise node.error(f'missing {sorted(missing)}')
  clause = values.pop('clause')
  answer = values.pop('answer', '')
  return Filler(clause, values, answer)


def _cell(node: Node) -> Cell:
  head = {key: node[key].text() for key in ('name', 'category', 'decision')}
  kind = node.get('kind', 'policy').text()
  if head['decision'] not in DECISIONS:
    raise node['decision'].error(f'expected one of {DECISIONS}, got {head["decision"]!r}')
  if kind not in KINDS:
    raise node['kind'].error(f'expected one of {KINDS}, got {kind!r}')
  decorate = node.get('decorate', True).value
  if not isinstance(decorate, bool):
    raise node['decorate'].error(f'expected true or false, got {decorate!r}')
  templates = node['templates']
  slots = set()
  for side in ('train', 'heldout'):
    for item in templates[side].items():
      slots |= _template_slots(item, item.text(fields={'ask', 'topic', 'request', 'question', 'text'}))
  if len(slots) != 1:
    raise templates.error(f'all templates of a cell fill the same slot, found {sorted(slots)}')
  train_t, heldout_t = templates.split(slots)
  required = {'clause'} | slots | _required_slots(head, kind)
  fillers = node['fillers']
  train_f, heldout_f = (tuple(_filler(item, required) for item in fillers[side].items())
                        for side in ('train', 'heldout'))
  # The same request on both sides would defeat the held-out split at its root.
  train_requests = {f.slots[s] for f in train_f for s in slots}
  for i, f in enumerate(heldout_f):
    for s in slots:
      if f.slots[s] in train_requests:
        raise fillers['heldout'].items()[i][s].error('the same request is also a train filler')
  return Cell(head['name'], head['category'], head['decision'], kind, train_t, heldout_t,
              train_f, heldout_f, decorate)


def load_cells(name: str) -> tuple[Cell, ...]:
  """The cells of one cells_*.yaml file, validated."""
  return tuple(_cell(item) for item in root(name)['cells'].items())
