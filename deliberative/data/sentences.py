"""Where a text can be cut and still end on a whole sentence.

Two places cut answers to a budget: self-distillation keeps a sample that ran past its token budget
up to its last whole sentence (stage1/labels.py, labels.truncated=trim), and SFT fits a long shipped
answer into its row the same way (data/tokenized.py, overlong='trim_answer'). An answer cut mid-word
would teach the model to stop mid-sentence; one cut at a sentence end reads as a shorter answer.
"""

from __future__ import annotations

import re

# A sentence ends at . ! or ? (closing quotes or brackets allowed) before whitespace or the end.
_SENTENCE_END = re.compile(r'[.!?]["\')\]]*(?=\s|$)')
MIN_CHARS = 80  # a cut shorter than this says too little to teach an answer


def cuts(text: str, min_chars: int = MIN_CHARS) -> list[int]:
  """Every position at least `min_chars` in where `text[:position]` ends a sentence, longest first."""
  return sorted((m.end() for m in _SENTENCE_END.finditer(text) if m.end() >= min_chars), reverse=True)


def last_whole_sentence(text: str, min_chars: int = MIN_CHARS) -> str | None:
  """`text` up to its last whole sentence, or None if that leaves fewer than `min_chars` characters.
  The text's own end counts only when it ends a sentence."""
  found = cuts(text.rstrip(), min_chars)
  return text[:found[0]].rstrip() if found else None
