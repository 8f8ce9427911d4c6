"""The safety spec: a line-oriented, human-editable policy file and its parsed form.

A spec has general principles (`GP.n`), style guidelines (`ST.n`, each with a key
such as `hard_refusal`) and one content policy per category. A policy sorts requests
into clauses that are allowed (comply), disallowed (refuse) or require a safe
completion. Every item has a stable id so that a chain of thought can cite it and a
metric can check the citation. The file format is documented in the preamble of the
default spec, `deliberative/assets/spec.md`.

    spec = Spec.load()                 # packaged default; Spec.load(path) for a user file
    spec.version                       # 12 hex chars, stamped on every artifact
    spec.render('illicit_behavior')    # the text a model or judge sees in its prompt
    spec.cited_clause_ids(cot)         # ['IB.4'] for a CoT that cites IB.4
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path

CATEGORIES = ('erotic', 'extremism', 'harassment', 'illicit_behavior',
              'regulated_advice', 'self_harm', 'violence')
NO_CATEGORY = 'none'
DECISIONS = ('comply', 'refuse', 'safe_complete')
HARD_REFUSAL = 'hard_refusal'
REQUIRED_STYLES = (HARD_REFUSAL, 'self_harm_safe_completion',
                   'regulated_advice_safe_completion')
DEFAULT_PATH = Path(__file__).parent / 'assets' / 'spec.md'

# The wording of the file's `###` headings and of render(); the second names are
# accepted so that a user may call a decision by its behaviour instead.
_SUBSECTION_DECISIONS = {
    'allowed': 'comply', 'comply': 'comply',
    'disallowed': 'refuse', 'refuse': 'refuse',
    'requires safe completion': 'safe_complete', 'safe completion': 'safe_complete',
    'safe_complete': 'safe_complete',
}
_DECISION_HEADINGS = {'comply': 'Allowed', 'refuse': 'Disallowed',
                      'safe_complete': 'Requires safe completion'}
_DECISION_ALIASES = {'allowed': 'comply', 'disallowed': 'refuse',
                     'safe_completion': 'safe_complete', **{d: d for d in DECISIONS}}

_ID = r'[A-Z]{2,4}\.\d{1,3}'
_ITEM_RE = re.compile(rf'^[-*]\s+(?P<id>{_ID})(?:\s+(?P<key>[a-z][a-z0-9_]*))?\s*:\s*(?P<text>\S.*)$')
_CATEGORY_RE = re.compile(r'^category\s+(?P<key>[A-Za-z0-9_]+)\s*:\s*(?P<name>\S.*)$', re.I)
# The boundaries keep `IB.31` from citing IB.3 and `XIB.3` from citing IB.3.
_CITATION_RE = re.compile(rf'(?<![A-Za-z0-9.])({_ID})(?![0-9])')
_COMMENT_RE = re.compile(r'^\s*<!--.*-->\s*$')


class SpecError(ValueError):
    """A malformed spec; the message starts with `path:line:`."""

    def __init__(self, message: str, path: str, line: int):
        super().__init__(f'{path}:{line}: {message}')
        self.path = path
        self.line = line


@dataclasses.dataclass(frozen=True)
class Clause:
    """One policy clause of a category."""
    id: str
    category: str
    decision: str  # one of DECISIONS
    text: str
    line: int


@dataclasses.dataclass(frozen=True)
class Guideline:
    """A general principle (key is None) or a style guideline (key like 'hard_refusal')."""
    id: str
    key: str | None
    text: str
    line: int


@dataclasses.dataclass(frozen=True)
class Category:
    key: str
    name: str
    summary: str
    clauses: tuple[Clause, ...]
    line: int

    def clauses_for(self, decision: str) -> tuple[Clause, ...]:
        decision = _decision(decision)
        return tuple(c for c in self.clauses if c.decision == decision)

    @property
    def decisions(self) -> tuple[str, ...]:
        """The decisions this category has clauses for, in DECISIONS order."""
        present = {c.decision for c in self.clauses}
        return tuple(d for d in DECISIONS if d in present)


def _decision(decision: str) -> str:
    try:
        return _DECISION_ALIASES[decision]
    except KeyError:
        raise ValueError(f'unknown decision {decision!r}; expected one of {DECISIONS}') from None


class Spec:
    """A parsed, validated safety spec. Build with `Spec.load` or `Spec.parse`."""

    def __init__(self, *, path: str, categories: Mapping[str, Category],
                 principles: tuple[Guideline, ...], styles: Mapping[str, Guideline]):
        self.path = path
        # Read-only views: Spec.load() hands every caller the same cached object.
        self.categories: Mapping[str, Category] = types.MappingProxyType(dict(categories))
        self.principles = tuple(principles)
        self.styles: Mapping[str, Guideline] = types.MappingProxyType(dict(styles))
        self._by_id = {g.id: g for g in principles}
        self._by_id.update({g.id: g for g in styles.values()})
        for category in self.categories.values():
            self._by_id.update({c.id: c for c in category.clauses})
        self.version = hashlib.sha256(self.to_text().encode('utf-8')).hexdigest()[:12]

    # --- construction -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Spec:
        """The packaged default spec, or the spec file at `path`."""
        if path is None:
            return _default_spec()
        path = Path(path)
        raw = path.read_bytes()
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError as e:  # the decoder's own message names neither the file nor the line
            line = raw[:e.start].count(b'\n') + 1
            raise ValueError(f'{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); '
                             'save the spec as UTF-8') from None
        return cls.parse(text, path=str(path))

    @classmethod
    def parse(cls, text: str, path: str = '<string>') -> Spec:
        return _Parser(text, path).parse()

    # --- lookup -------------------------------------------------------------------
    def clause(self, clause_id: str) -> Clause | Guideline:
        """Any item by id: a category clause, a principle or a style guideline."""
        try:
            return self._by_id[clause_id]
        except KeyError:
            raise KeyError(f'no item {clause_id!r} in spec {self.version}') from None

    def category(self, key: str) -> Category:
        try:
            return self.categories[key]
        except KeyError:
            raise KeyError(f'unknown category {key!r}; expected one of {tuple(self.categories)}') from None

    def clauses_for(self, category: str, decision: str) -> tuple[Clause, ...]:
        return self.category(category).clauses_for(decision)

    def style_for(self, category: str, decision: str) -> Guideline | None:
        """The style guideline a response with `decision` in `category` must follow."""
        decision = _decision(decision)
        if decision == 'refuse':
            return self.styles[HARD_REFUSAL]
        if decision == 'safe_complete':
            return self.styles[f'{category}_safe_completion']
        return None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    # --- citations ------------------------------------------------------------------
    def cited_ids(self, text: str) -> list[str]:
        """Ids of this spec's items cited in `text`: order of first appearance, unique."""
        seen = {}
        for match in _CITATION_RE.finditer(text):
            if match.group(1) in self._by_id:
                seen.setdefault(match.group(1), None)
        return list(seen)

    def cited_clause_ids(self, text: str) -> list[str]:
        """Like `cited_ids`, restricted to category clauses (no principles or styles)."""
        return [i for i in self.cited_ids(text) if isinstance(self._by_id[i], Clause)]

    def cited_categories(self, text: str) -> list[str]:
        """Categories of the clauses cited in `text`, in order of first citation."""
        seen = {}
        for clause_id in self.cited_clause_ids(text):
            seen.setdefault(self._by_id[clause_id].category, None)
        return list(seen)

    # --- text -----------------------------------------------------------------------
    def render(self, category: str) -> str:
        """The spec as a model sees it: principles, styles, every category's summary,
        and the full clauses of `category` only (none for `category='none'`)."""
        if category != NO_CATEGORY:
            self.category(category)  # raises on an unknown key
        lines = ['Safety spec', '', 'Principles:']
        lines += [f'- {g.id}: {g.text}' for g in self.principles]
        lines += ['', 'Style guidelines:']
        lines += [f'- {g.id} {g.key}: {g.text}' for g in self.styles.values()]
        lines += ['', 'Categories:']
        lines += [f'- {c.key} ({c.name}): {c.summary}' for c in self.categories.values()]
        if category != NO_CATEGORY:
            cat = self.categories[category]
            lines += ['', f'Full policy for {cat.key} ({cat.name}):']
            for decision in cat.decisions:
                lines.append(f'{_DECISION_HEADINGS[decision]}:')
                lines += [f'- {c.id}: {c.text}' for c in cat.clauses_for(decision)]
        return '\n'.join(lines) + '\n'

    def to_text(self) -> str:
        """Canonical file text. The version hashes it, so whitespace, comments and the
        preamble do not change the version while any change of content does."""
        lines = ['## Principles']
        lines += [f'- {g.id}: {g.text}' for g in self.principles]
        lines += ['', '## Style guidelines']
        lines += [f'- {g.id} {g.key}: {g.text}' for g in self.styles.values()]
        for cat in self.categories.values():
            lines += ['', f'## Category {cat.key}: {cat.name}', cat.summary]
            for decision in cat.decisions:
                lines.append(f'### {_DECISION_HEADINGS[decision]}')
                lines += [f'- {c.id}: {c.text}' for c in cat.clauses_for(decision)]
        return '\n'.join(lines) + '\n'

    def __repr__(self) -> str:
        return f'Spec(path={self.path!r}, version={self.version!r})'


@functools.lru_cache(maxsize=1)
def _default_spec() -> Spec:
    return Spec.parse(DEFAULT_PATH.read_text(encoding='utf-8'), path=str(DEFAULT_PATH))


@dataclasses.dataclass
class _Item:
    id: str
    key: str | None
    text: str
    line: int
    section: str  # 'principles', 'styles' or a category key
    decision: str | None


@dataclasses.dataclass
class _CategoryDraft:
    key: str
    name: str
    line: int
    summary: list[str] = dataclasses.field(default_factory=list)
    subsections: dict[str, int] = dataclasses.field(default_factory=dict)  # decision -> line


class _Parser:
    """One pass over the lines, then whole-file checks. Every error names a line."""

    def __init__(self, text: str, path: str):
        self.lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
        self.path = path
        self.section: str | None = None  # 'principles', 'styles' or a category key
        self.section_lines: dict[str, int] = {}
        self.decision: str | None = None
        self.items: list[_Item] = []
        self.categories: dict[str, _CategoryDraft] = {}
        self.open_item: _Item | None = None

    def error(self, message: str, line: int) -> SpecError:
        return SpecError(message, self.path, line)

    def parse(self) -> Spec:
        for number, raw in enumerate(self.lines, start=1):
            self.parse_line(raw.rstrip(), number)
        return self.build()

    def parse_line(self, line: str, number: int) -> None:
        if not line.strip() or _COMMENT_RE.match(line):
            self.open_item = None
            return
        if line.startswith('### '):
            self.open_item = None
            return self.open_subsection(line[4:].strip(), number)
        if line.startswith('## '):
            self.open_item = None
            return self.open_section(line[3:].strip(), number)
        if re.match(r'^[-*]\s', line):
            return self.add_item(line, number)  # an error before the first section
        if self.section is None:
            return  # free preamble, title included
        if line.startswith('#'):
            raise self.error(f'unknown heading {line.split()[0]!r} inside a section; sections '
                             'use "## " and decision lists "### "', number)
        if line[0].isspace() and self.open_item is not None:
            self.open_item.text += ' ' + line.strip()
            return
        if self.section in self.categories and self.decision is None:
            self.categories[self.section].summary.append(line.strip())
            return
        raise self.error('unexpected text: items start with "- ID: " and continue on '
                         'indented lines', number)

    def open_section(self, title: str, number: int) -> None:
        lowered = title.lower()
        match = _CATEGORY_RE.match(title)
        if lowered == 'principles':
            section = 'principles'
        elif lowered in ('style guidelines', 'styles'):
            section = 'styles'
        elif match:
            section = match.group('key')
            if section not in CATEGORIES:
                raise self.error(f'unknown category {section!r}; expected one of '
                                 f'{", ".join(CATEGORIES)}', number)
        else:
            raise self.error(f'unknown section {title!r}; expected "Principles", '
                             '"Style guidelines" or "Category <key>: <name>"', number)
        if section in self.section_lines:
            raise self.error(f'duplicate section {title!r} (first at line '
                             f'{self.section_lines[section]})', number)
        self.close_category()
        self.section_lines[section] = number
        self.section, self.decision = section, None
        if match:
            self.categories[section] = _CategoryDraft(section, match.group('name').strip(), number)

    def open_subsection(self, title: str, number: int) -> None:
        if self.section not in self.categories:
            raise self.error(f'subsection {title!r} outside a category section', number)
        decision = _SUBSECTION_DECISIONS.get(title.lower())
        if decision is None:
            raise self.error(f'unknown subsection {title!r}; expected "Allowed", '
                             '"Disallowed" or "Requires safe completion"', number)
        draft = self.categories[self.section]
        if decision in draft.subsections:
            raise self.error(f'duplicate subsection {title!r} (first at line '
                             f'{draft.subsections[decision]})', number)
        draft.subsections[decision] = number
        self.decision = decision

    def add_item(self, line: str, number: int) -> None:
        if self.section is None:
            raise self.error('clause outside any section', number)
        match = _ITEM_RE.match(line)
        if not match:
            raise self.error('malformed item; expected "- ID: text" (a style guideline: '
                             '"- ID style_key: text")', number)
        key = match.group('key')
        if self.section == 'styles' and key is None:
            raise self.error('style guideline needs a key: "- ID style_key: text"', number)
        if self.section != 'styles' and key is not None:
            raise self.error(f'unexpected key {key!r}; only style guidelines have keys', number)
        if self.section in self.categories and self.decision is None:
            raise self.error('clause outside a decision subsection ("### Allowed", '
                             '"### Disallowed" or "### Requires safe completion")', number)
        self.open_item = _Item(match.group('id'), key, match.group('text').strip(), number,
                               self.section, self.decision)
        self.items.append(self.open_item)

    def close_category(self) -> None:
        draft = self.categories.get(self.section)
        if draft is None:
            return
        if not draft.summary:
            raise self.error(f'category {draft.key!r} has no summary line', draft.line)
        if not any(item.section == draft.key for item in self.items):
            raise self.error(f'category {draft.key!r} has no clauses', draft.line)

    def build(self) -> Spec:
        self.close_category()
        end = len(self.lines)
        self.check_ids()
        for section, title in (('principles', 'Principles'), ('styles', 'Style guidelines')):
            if section not in self.section_lines:
                raise self.error(f'missing section "## {title}"', end)
            if not any(item.section == section for item in self.items):
                raise self.error(f'section "## {title}" has no items', self.section_lines[section])
        for key in CATEGORIES:
            if key not in self.categories:
                raise self.error(f'missing required category {key!r}', end)
        styles = {}
        for item in self.items:
            if item.section == 'styles':
                if item.key in styles:
                    raise self.error(f'duplicate style guideline {item.key!r} (first at line '
                                     f'{styles[item.key].line})', item.line)
                styles[item.key] = Guideline(item.id, item.key, item.text, item.line)
        for key in REQUIRED_STYLES:
            if key not in styles:
                raise self.error(f'missing required style guideline {key!r}', end)
        for draft in self.categories.values():
            line = draft.subsections.get('safe_complete')
            if line is not None and f'{draft.key}_safe_completion' not in styles:
                raise self.error(f'category {draft.key!r} has safe-completion clauses but no '
                                 f'style guideline "{draft.key}_safe_completion"', line)
        principles = tuple(Guideline(i.id, None, i.text, i.line)
                           for i in self.items if i.section == 'principles')
        categories = {}
        for key in CATEGORIES:  # canonical order, whatever the file's order
            draft = self.categories[key]
            clauses = tuple(Clause(i.id, key, i.decision, i.text, i.line)
                            for i in self.items if i.section == key)
            categories[key] = Category(key, draft.name, ' '.join(draft.summary), clauses, draft.line)
        return Spec(path=self.path, categories=categories, principles=principles, styles=styles)

    def check_ids(self) -> None:
        """Ids are unique, and each section owns exactly one prefix."""
        first_line: dict[str, int] = {}
        prefix_owner: dict[str, str] = {}
        section_prefix: dict[str, str] = {}
        for item in self.items:
            if item.id in first_line:
                raise self.error(f'duplicate clause id {item.id} (first at line '
                                 f'{first_line[item.id]})', item.line)
            first_line[item.id] = item.line
            prefix = item.id.split('.')[0]
            expected = section_prefix.setdefault(item.section, prefix)
            if prefix != expected:
                raise self.error(f'id {item.id} does not use its section\'s prefix {expected}',
                                 item.line)
            owner = prefix_owner.setdefault(prefix, item.section)
            if owner != item.section:
                raise self.error(f'prefix {prefix} is already used by section {owner!r}',
                                 item.line)
