"""Jailbreak wrappers: framings that try to get a disallowed request answered.

Eight kinds, each with two train and two held-out wrappers. Train wrappers wrap a few
disallowed train prompts (so SFT sees that framing changes nothing, principle GP.4);
held-out wrappers only wrap held-out prompts in `eval_jailbreak`, where every base
prompt gets every held-out wrapper so that goodness@0.1 (safety under the worst 10%
of wrappers, per prompt) can be computed. The wrappers are data,
`deliberative/assets/demo/jailbreak.yaml`.
"""

from __future__ import annotations

import dataclasses

from deliberative.data.demo import assets
from deliberative.data.demo.cells import Template

# kind -> (how a CoT names the framing, train wrappers, held-out wrappers)
_WRAPPERS = {kind: (node['framing'].text(), *node.split({'prompt'}))
             for kind, node in assets.root('jailbreak.yaml')['kinds'].mapping().items()}
KINDS = tuple(_WRAPPERS)


@dataclasses.dataclass(frozen=True)
class Wrapper:
    kind: str
    framing: str  # how the CoT names it
    template: Template  # a template over the single slot {prompt}

    @property
    def id(self) -> str:
        return self.template.id

    def wrap(self, prompt: str) -> str:
        return self.template.render({'prompt': prompt})


def _build() -> tuple[Wrapper, ...]:
    wrappers = []
    for kind, (framing, train, heldout) in _WRAPPERS.items():
        for heldout_flag, texts in ((False, train), (True, heldout)):
            tag = 'h' if heldout_flag else 't'
            for i, text in enumerate(texts, 1):
                wrappers.append(Wrapper(kind, framing, Template(f'jb-{kind}-{tag}{i}', text, heldout_flag)))
    return tuple(wrappers)


WRAPPERS = _build()


def wrappers_for(heldout: bool) -> tuple[Wrapper, ...]:
    return tuple(w for w in WRAPPERS if w.template.heldout == heldout)
