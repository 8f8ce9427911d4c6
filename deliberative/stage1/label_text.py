"""Words for label-written traces, taken from the request and from the spec itself.

`request_phrase` turns a prompt into a short phrase that names what it asks for ("how to make
a pipe bomb", "writing a phishing email to bank customers"), so that a refusal says what it
declines and a CoT says why a clause governs. `excerpts` cuts a spec text (a clause, a style
guideline, a category summary) into the short fragments a CoT quotes: quoting the spec's own
words, in several cuts, varies the CoTs without a hand-written phrase bank, and keeps them
true to whatever spec file is loaded.
"""

from __future__ import annotations

import re

MAX_PHRASE_WORDS = 12

# Imperative openers and their gerunds: "Write X" is named as "writing X". A closed list, so a
# verb is never mis-inflected; any other opener falls back to quoting the request's first words.
_GERUNDS = {
    'write': 'writing', 'give': 'giving', 'create': 'creating', 'make': 'making', 'list': 'listing',
    'describe': 'describing', 'explain': 'explaining', 'provide': 'providing', 'tell': 'telling',
    'show': 'showing', 'design': 'designing', 'develop': 'developing', 'draft': 'drafting',
    'compose': 'composing', 'outline': 'outlining', 'suggest': 'suggesting', 'generate': 'generating',
    'produce': 'producing', 'build': 'building', 'find': 'finding', 'teach': 'teaching', 'help': 'helping',
    'plan': 'planning', 'convince': 'convincing', 'persuade': 'persuading', 'share': 'sharing',
    'recommend': 'recommending', 'detail': 'detailing', 'instruct': 'instructing', 'brainstorm': 'brainstorming',
    'post': 'posting', 'send': 'sending', 'draw': 'drawing', 'code': 'coding', 'devise': 'devising',
    'identify': 'identifying', 'construct': 'constructing', 'prepare': 'preparing', 'offer': 'offering',
    'compile': 'compiling', 'summarize': 'summarizing', 'summarise': 'summarising', 'rewrite': 'rewriting',
    'edit': 'editing', 'translate': 'translating', 'answer': 'answering', 'discuss': 'discussing',
}
_POLITE = re.compile(r'^(?:please|hey|hi|hello|ok|okay|so|now|also)[,!]?\s+', re.I)
_AUX = r'(?:do|can|could|would|should|might|may|will|does)'
_WHO = r'(?:i|we|one|someone|somebody|you|a person|people|they)'
_HOW = re.compile(rf'^how\s+(?:{_AUX}\s+{_WHO}\s+(?:best\s+|possibly\s+|easily\s+)?|to\s+)(?P<rest>.+)$', re.I)
_ASK_YOU = re.compile(rf'^(?:{_AUX}|would you mind)\s+you\s+(?:please\s+)?(?:help\s+me\s+(?:to\s+)?)?(?P<rest>.+)$', re.I)
_WANT = re.compile(r"^(?:i|we)\s*(?:want|need|would like|'d like|wish|am trying|'m trying|are trying)\s+"
                   r"(?:you\s+)?to\s+(?P<rest>.+)$", re.I)
_WAYS = re.compile(r'^what\s+(?:are|is)\s+(?:some\s+|the\s+)?(?:best\s+|most\s+\w+\s+|effective\s+)?'
                   r'(?P<noun>ways?|methods?|techniques?|tips|steps|strategies|tactics|means)\s+'
                   r'(?P<link>to|for|of)\s+(?P<rest>.+)$', re.I)
_INDIRECT = re.compile(r'^(?:me|us)\s+', re.I)
# A request inside a longer sentence ("As a journalist, I want to know how to ...", "a guide for stabbing ...").
_HOW_INSIDE = re.compile(r'\bhow\s+(?:to|can i|do i|could i|would i|can we|do we)\s+(?P<rest>.+)$', re.I)
_ABOUT_INSIDE = re.compile(r'\b(?:guide|tutorial|manual|instructions|tips|textbook|report|speech|article|book|'
                           r'memo|essay|post|script|plan)\s+(?:on|for|about)\s+(?P<rest>.+)$', re.I)
# Words that say little about what is asked: a phrase made only of these falls through to the
# next sentence ("Can you give me some tips?" after the sentence that says tips for what).
_GENERIC = frozenset('giving some tips helping help with this that about more information advice know '
                     'telling things please answer question'.split())
_TRAILING = frozenset('a an the to of in on for from with by and or that who which into about at as '
                      'your their his her its our this these those is are be'.split())
# Any other question is named by itself: "how many pills would be a lethal dose".
_WH = re.compile(r'^(?:what|which|where|when|who|whom|whose|how many|how much|how long|why)\b', re.I)
_Q_PREFIX = re.compile(r'^\s*(?:q|question|user)\s*:\s*', re.I)
_CUT = re.compile(r'[,;:!?()\[\]"]|\s[-\u2013\u2014]\s|\.(?:\s|$)|\s(?:without|so that|while|in order to|because)\s',
                  re.I)
_SENTENCE = re.compile(r'(?<=[.!?])\s+|\n+')
# First person becomes second: the phrase is said back to the user.
_PRONOUNS = {'i': 'you', 'me': 'you', 'my': 'your', 'mine': 'yours', 'myself': 'yourself', 'we': 'you',
             'us': 'you', 'our': 'your', 'ours': 'yours', 'ourselves': 'yourselves', "i'm": "you're", 'am': 'are'}
_PRONOUN_RE = re.compile(r"\b(?:i'm|i|me|my|mine|myself|we|us|our|ours|ourselves|am)\b", re.I)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")


def _second_person(text: str) -> str:
  return _PRONOUN_RE.sub(lambda m: _PRONOUNS[m.group().lower()], text)


def _clip(text: str, max_words: int) -> str:
  """Up to the first break (punctuation or a subordinate 'without ...'), at most max_words words."""
  cut = _CUT.search(text)
  head = text[:cut.start()] if cut and len(text[:cut.start()].split()) >= 2 else text
  words = head.split()[:max_words]
  while len(words) > 2 and words[-1].lower().strip('.,;:') in _TRAILING:
    words.pop()  # a cut mid-phrase ends on a content word, not on "to" or "the"
  return ' '.join(words).rstrip('.,;:') if words else ''


def _sentences(prompt: str) -> list[str]:
  # An instruction followed by its input after a blank line (Self-Instruct): the request is the
  # instruction; the input may hold sentences that read as requests of their own.
  # A context followed by its request after a rule (HarmBench contextual): the request is last.
  prompt = re.split(r'\n\s*---+\s*\n', prompt.strip())[-1]
  head = prompt.strip().split('\n\n')[0]
  if len(head.split()) >= 3:
    prompt = head
  return [_POLITE.sub('', _Q_PREFIX.sub('', s.strip())) for s in _SENTENCE.split(prompt.strip()) if s.strip()]


def _verb_phrase(rest: str, max_words: int) -> str | None:
  """'make a bomb' -> 'how to make a bomb'; 'write X' -> 'writing X' (the request as a phrase)."""
  words = rest.split()
  if not words:
    return None
  first = words[0].lower().strip(',.')
  if first in _GERUNDS:
    tail = _INDIRECT.sub('', ' '.join(words[1:]))
    return _clip(f'{_GERUNDS[first]} {tail}'.strip(), max_words)
  return _clip(f'how to {rest}', max_words)


def _phrase_of(sentence: str, max_words: int) -> str | None:
  """The request of one sentence as a phrase, or None when it opens no way this module reads."""
  for pattern in (_HOW, _ASK_YOU, _WANT):
    m = pattern.match(sentence)
    if m:
      return _verb_phrase(m.group('rest'), max_words)
  m = _WAYS.match(sentence)
  if m:
    return _clip(f'{m.group("noun").lower()} {m.group("link").lower()} {m.group("rest")}', max_words)
  if sentence.split()[0].lower() in _GERUNDS:
    return _verb_phrase(sentence, max_words)
  m = _HOW_INSIDE.search(sentence)
  if m:
    return _clip(f'how to {m.group("rest")}', max_words)
  m = _ABOUT_INSIDE.search(sentence)
  if m:
    return _clip(m.group('rest'), max_words)
  if _WH.match(sentence):
    phrase = _clip(sentence, max_words)
    return phrase[:1].lower() + phrase[1:]
  return None


def _specific(phrase: str) -> bool:
  return len(content_words(phrase) - _GENERIC) >= 2


def request_phrase(prompt: str, max_words: int = MAX_PHRASE_WORDS) -> str:
  """What the request asks for, as a short phrase in the second person: from the first sentence
  whose request names something specific. When no sentence opens a way this module reads, the
  request's first words in quotes, so the content is still named, never guessed."""
  sentences = _sentences(prompt)
  phrases = [p for p in (_phrase_of(s, max_words) for s in sentences) if p and len(p.split()) >= 2]
  chosen = next((p for p in phrases if _specific(p)), phrases[0] if phrases else None)
  if chosen:
    return _second_person(chosen)
  words = _WORD.findall(sentences[0] if sentences else prompt)[:max(3, min(7, max_words - 4))]
  while len(words) > 3 and words[-1].lower() in _TRAILING:
    words.pop()
  return f'"{" ".join(words)}..."' if words else 'this request'


def content_words(text: str) -> set[str]:
  """Lower-cased words of 4+ letters: what a clause and a request share when they are about
  the same thing (function words are almost all shorter)."""
  return {w.lower().strip("'-") for w in _WORD.findall(text) if len(w) >= 4}


def excerpts(text: str, max_words: int = 9) -> list[str]:
  """Short cuts of one spec text, first letter lower-cased (they sit mid-sentence): its head
  (before 'such as' or a colon), its first clause, and its opening words; duplicates removed.
  A style guideline's leading 'For a ..., ' says when it applies and is dropped."""
  body = re.sub(r'^For [^.]*?[,:]\s*(?=(?:give|respond|add|say|answer|offer|write|decline|refuse)\b)', '',
                text.strip())
  cuts = [re.split(r',?\s+such as\s+|:\s', body, maxsplit=1)[0],
          re.split(r'[,;.:]\s', body, maxsplit=1)[0],
          ' '.join(body.split()[:max_words])]
  out = []
  for cut in cuts:
    words = cut.split()[:max_words]
    while len(words) > 2 and words[-1].lower().strip('.,;:') in _TRAILING:
      words.pop()
    cut = ' '.join(words).rstrip('.,;:')
    cut = cut[:1].lower() + cut[1:]
    if len(words) >= 3 and cut not in out:  # "factual" alone says nothing
      out.append(cut)
  return out or [' '.join(body.split()[:max_words])]


def sentences_of(text: str) -> list[str]:
  return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
