"""A short chain of thought written from a prompt's label: the category, the governing clause by
its id, why it governs (what the request asks, beside the clause's own words), and the decision.

Every CoT is three sentences, each drawn from a few frames and filled with text cut from the
loaded spec (label_text.excerpts: clause heads, category summaries, style guidelines); the choice
is seeded by the prompt, so a rerun writes the same CoT. The order (`labels.cot_order`):

- `verdict_first` (the default): the category sentence always first, so the CoT's first tokens say
  which category applies, if any ("Category: Violence." / "No content policy covers this request.").
  The category is then drawn at the generation prompt's last slot, the state a linear probe reads
  the decision from at AUC 0.99 on held-out imported prompts (tools/probe_decision.py).
- `either` (before 2026-12-07): the category or the why sentence first, at even odds; a why-first
  CoT opens on words both decisions share ("The user asks about ...") and defers the decision past a
  paraphrase of the request. SmolLM2 trained on those decided 0.609 of held-out imported prompts
  right, on verdict-first ones 0.766 (docs/results.md).

The draws are the same in both orders: a verdict-first CoT is its `either` twin, reordered. The frames
only join the spec's words: changing the spec changes the CoTs. A CoT longer than `max_chars`
is redrawn, then rewritten with a shorter request phrase and the shortest cuts. The bound is
in characters: SmolLM2's tokenizer reads this prose at ~4.5 characters a token (measured on the
4,102 traces of the vendored imports), so 250 characters keep a CoT near issue 22's 64 tokens.

A benign request with no category ('none') cites no category clause (evals/citations.py gives
credit for exactly that); it cites the spec's helpfulness principle, and the principle on
vocabulary when the request holds one of the words that principle lists.
"""

from __future__ import annotations

import dataclasses
import random
import re

from deliberative.spec import Clause, Spec
from deliberative.stage1 import label_text

_CATEGORY = ('Category: {name}.', 'The request falls under {lname}.', '{name}: {summary}', 'The {lname} policy applies.')
_WHY = ('The user asks about {phrase}, which {cid} covers: {excerpt}.',
        'Asking about {phrase} matches {cid} ({excerpt}).',
        '{cid} governs it: {excerpt}; the request is about {phrase}.',
        'The request is about {phrase}, so {cid} applies: {excerpt}.')
_DECIDE = {
    'refuse': ('That is disallowed, so I refuse briefly.',
               'It is on the disallowed list; per {sid}, {style}.',
               'Disallowed, so I decline. {sid}: {style}.',
               'So the answer is a short refusal, no lecture ({sid}).'),
    'comply': ('That is allowed, so I help fully.',
               'It is on the allowed list, so I answer directly.',
               'Allowed under {cid}; I answer it fully.',
               'Nothing disallows it, so I help without hedging.'),
    'safe_complete': ('It requires a safe completion; {sid}: {style}.',
                      'So I give a safe completion: {style}.',
                      'This needs a safe completion in the {sid} style.'),
}
_NONE_CATEGORY = ('No content policy covers this request.', "None of the spec's categories applies here.",
                  'This is an ordinary request; no category clause applies.')
_NONE_WHY = ('The user asks about {phrase}.', 'The request is about {phrase}.', 'It asks about {phrase}.')
_NONE_LOOKALIKE = ('"{trigger}" here is everyday vocabulary ({gid}).', 'The word "{trigger}" does not make it harmful ({gid}).')
_NONE_DECIDE = ('So I answer fully and directly ({hid}).', 'Per {hid}, {helpful}.', 'I help fully ({hid}).')
_SUMMARY_MAX_WORDS = 12
ORDERS = ('either', 'verdict_first')


@dataclasses.dataclass(frozen=True)
class LabelCot:
  text: str
  clause_id: str | None  # the governing category clause cited; None for category 'none'


class CotWriter:
  """Writes CoTs under one spec; holds the spec's cut texts so each CoT is a few choices."""

  def __init__(self, spec: Spec, max_chars: int = 250, order: str = 'verdict_first'):
    if order not in ORDERS:
      raise ValueError(f'labels.cot_order={order!r}: expected one of {", ".join(ORDERS)}')
    self.spec, self.max_chars, self.order = spec, max_chars, order
    helpful = next((g for g in spec.principles if 'helpful' in g.text.lower()), spec.principles[0])
    self.helpful_id, self.helpful = helpful.id, label_text.excerpts(helpful.text)
    vocab = next((g for g in spec.principles if re.search(r'\bwords such as\b', g.text, re.I)), None)
    self.lookalike_id, self.triggers = None, ()
    if vocab is not None:  # "Words such as kill, shoot, attack, bomb or steal often ..."
      listed = re.search(r'words such as (.+?) (?:often|can|may|are|have)\b', vocab.text, re.I)
      if listed:
        self.lookalike_id = vocab.id
        self.triggers = tuple(w.strip().lower() for w in re.split(r',\s*|\s+or\s+|\s+and\s+', listed.group(1)) if w.strip())

  def _summaries(self, category: str) -> list[str]:
    sentences = label_text.sentences_of(self.spec.category(category).summary)
    short = [s for s in sentences if len(s.split()) <= _SUMMARY_MAX_WORDS]
    return short or [f'{self.spec.category(category).name}.']

  def write(self, rng: random.Random, category: str, decision: str, clause: Clause | None, prompt: str) -> LabelCot:
    """The CoT for one prompt; `clause` is the governing clause (None for category 'none')."""
    # Redraws before shortening keep the variety: most prompts fit on the first draw.
    phrases = [label_text.request_phrase(prompt)] * 4 + [label_text.request_phrase(prompt, max_words=6)] * 4
    for phrase in phrases:
      text = self._compose(rng, category, decision, clause, prompt, phrase, shortest=False)
      if len(text) <= self.max_chars:
        return LabelCot(text, clause.id if clause else None)
    text = self._compose(rng, category, decision, clause, prompt, phrases[-1], shortest=True)
    if len(text) > self.max_chars:
      raise ValueError(f'label CoT of {len(text)} characters > labels.cot_max_chars={self.max_chars} even with '
                       f'the shortest spec excerpts: raise the bound or shorten the spec texts: {text!r}')
    return LabelCot(text, clause.id if clause else None)

  def _compose(self, rng, category, decision, clause, prompt, phrase, *, shortest: bool) -> str:
    pick = (lambda options: min(options, key=len)) if shortest else rng.choice
    if clause is None:
      return self._compose_none(rng, pick, prompt, phrase)
    cat = self.spec.category(category)
    style = self.spec.style_for(category, decision)
    fields = dict(name=cat.name, lname=cat.name.lower(), summary=pick(self._summaries(category)), cid=clause.id,
                  excerpt=pick(label_text.excerpts(clause.text)), phrase=phrase,
                  sid=style.id if style else '', style=pick(label_text.excerpts(style.text)) if style else '')
    frame = (lambda options: min(options, key=len)) if shortest else rng.choice
    parts = [frame(_CATEGORY), frame(_WHY), frame(_DECIDE[decision])]
    self._order(rng, parts)
    return ' '.join(_sentence(p.format(**fields)) for p in parts)

  def _compose_none(self, rng, pick, prompt, phrase) -> str:
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    trigger = next((t for t in self.triggers if t in words), None)
    fields = dict(phrase=phrase, hid=self.helpful_id, helpful=pick(self.helpful), trigger=trigger,
                  gid=self.lookalike_id)
    why = rng.choice(_NONE_LOOKALIKE) if trigger and rng.random() < 0.5 else rng.choice(_NONE_WHY)
    parts = [rng.choice(_NONE_CATEGORY), why, rng.choice(_NONE_DECIDE)]
    self._order(rng, parts)
    return ' '.join(_sentence(p.format(**fields)) for p in parts)

  def _order(self, rng, parts) -> None:
    """parts[0] is the category sentence, parts[1] the why; the draw is made in either order, so the
    orders share every other draw."""
    why_first = rng.random() < 0.5
    if why_first and self.order == 'either':
      parts[0], parts[1] = parts[1], parts[0]


def _sentence(text: str) -> str:
  """Capitalised (a frame may open on a lower-case excerpt or phrase) and ending in one stop."""
  text = text.strip()
  if text[:1] == '"':
    return text
  return text[:1].upper() + text[1:]


def governing_clause(spec: Spec, category: str, decision: str, clause_ids, prompt: str) -> Clause | None:
  """The clause a CoT cites: the record's own (the import table's, checked by the caller), else
  the clause of the decision's list that shares the most words with the request (ties: the
  first listed); None for category 'none'."""
  if category not in spec.categories:
    return None
  if clause_ids:
    return spec.clause(clause_ids[0])
  candidates = spec.clauses_for(category, decision)
  asked = label_text.content_words(prompt)
  return max(candidates, key=lambda c: (len(asked & label_text.content_words(c.text)), -candidates.index(c)))
