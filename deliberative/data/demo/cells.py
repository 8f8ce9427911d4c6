"""Building blocks of the demo data: a *cell* is one (category, decision) pair with its
prompt templates and the fillers (slot values: the requests) they are filled with.

Templates are `str.format` strings over the slots of the cell's fillers. Each cell
splits both its templates and its fillers into `train` and `heldout`: the eval splits
use only held-out templates filled with held-out fillers, so an eval prompt asks a
request that no training prompt asks, in wording no training prompt uses. It then
measures whether a model learned the spec, not whether it remembers its training
prompts. The cells themselves are data: `deliberative/assets/demo/cells_*.yaml`, read
by `assets.load_cells`.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Filler:
    """One slot assignment. `clause` is the spec id that decides the request: a
    category clause for policy cells, a principle (GP.n) for the `none` cells."""
    clause: str
    slots: Mapping[str, str]
    answer: str = ''  # helpful content (comply) or general information (RA safe completion)


@dataclasses.dataclass(frozen=True)
class Template:
    id: str
    text: str
    heldout: bool

    @property
    def fixed_chunks(self) -> list[str]:
        """The literal text between slots (what is fixed for every filler)."""
        return [lit for lit, _, _, _ in string.Formatter().parse(self.text) if lit]

    def render(self, slots: Mapping[str, str]) -> str:
        text = self.text.format(**slots)
        return text[:1].upper() + text[1:]


@dataclasses.dataclass(frozen=True)
class Cell:
    """Prompts of one (category, decision). `kind` is 'policy' for the seven spec
    categories, 'benign' or 'lookalike' for the `none` category."""
    name: str  # short prefix of the template ids, e.g. 'ib-refuse'
    category: str
    decision: str
    kind: str
    train: tuple[str, ...]  # templates
    heldout: tuple[str, ...]
    train_fillers: tuple[Filler, ...]
    heldout_fillers: tuple[Filler, ...]
    decorate: bool = True  # whether small talk ("Hi! ", " Thanks!") may surround its prompts

    @property
    def fillers(self) -> tuple[Filler, ...]:
        return self.train_fillers + self.heldout_fillers

    def fillers_for(self, heldout: bool) -> tuple[Filler, ...]:
        return self.heldout_fillers if heldout else self.train_fillers

    @property
    def slot(self) -> str:
        """The one slot all templates of the cell fill: the request itself."""
        (name,) = {n for t in self.train + self.heldout
                   for _, n, _, _ in string.Formatter().parse(t) if n is not None}
        return name

    def requests_for(self, heldout: bool) -> tuple[str, ...]:
        return tuple(f.slots[self.slot] for f in self.fillers_for(heldout))

    @property
    def templates(self) -> tuple[Template, ...]:
        return (tuple(Template(f'{self.name}-t{i}', t, False) for i, t in enumerate(self.train, 1))
                + tuple(Template(f'{self.name}-h{i}', t, True) for i, t in enumerate(self.heldout, 1)))

    def templates_for(self, heldout: bool) -> tuple[Template, ...]:
        return tuple(t for t in self.templates if t.heldout == heldout)


_THIRD_PERSON = {'my': 'their', 'me': 'them', 'myself': 'themselves', 'mine': 'theirs',
                 'I': 'they', "I'm": "they're", "I've": "they've"}
_PRONOUN_RE = re.compile(r"(?<![\w'])(I'm|I've|I|my|me|myself|mine)(?![\w'])")


def third_person(text: str) -> str:
    """'protect my grandparents' -> 'protect their grandparents', for CoT paraphrases."""
    return _PRONOUN_RE.sub(lambda m: _THIRD_PERSON[m.group(1)], text)


def word_count(text: str) -> int:
    return len(text.split())
