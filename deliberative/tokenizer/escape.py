"""The escape that keeps a special token spelled in message text as text under transformers'
default `apply_chat_template`, for every exported tokenizer.

The sentencepiece export's escape (tokenizer/export.py), around a template we did not write: a
prelude rebinds `messages` with every spelling of a special token in message text broken by
U+FDD0 after its first character, and the tokenizer's normaliser (first in line) deletes
U+FDD0 before BPE. Special tokens are matched on the raw text (normalized=False), so the
template's own markers stay control tokens while a spelled one in a message is text, with the
ids our `HFTokenizer.encode` gives it. Breaking each special spelling, not every '<' as our own
template does, keeps the model's non-special added tokens (Qwen's <tool_call>) matched in text
as the model's own tokenizer matches them. `split_special_tokens` cannot do this (it would turn
the template's markers into text too: tokenizer/export.py's docstring).

Where `transformers` drops the exported normaliser, the template's markers are still control
tokens and a spelled one is still text, but that text keeps U+FDD0 (3 byte tokens) after its
first character: transformers 5.24 rebuilds the normaliser in code for a few families,
Qwen2Tokenizer (NFC alone) for any config.json of model_type qwen2 among them
(tests/test_export_safety.py pins both).
"""

from __future__ import annotations

import json

# Written into message text by exported chat templates and deleted by the exported tokenizer's
# normaliser: a noncharacter, so real text (almost) never holds one (tokenizer/export.py).
ESCAPE = "\ufdd0"

ESCAPE_NORMALIZER = {"type": "Replace", "pattern": {"String": ESCAPE}, "content": ""}


def special_spellings(tokenizer_json: str) -> list[str]:
  """The spellings of a tokenizer.json's special added tokens, longest first."""
  added = json.loads(tokenizer_json).get("added_tokens", [])
  return sorted({t["content"] for t in added if t.get("special")}, key=lambda t: (-len(t), t))


def escaped_tokenizer_json(tokenizer_json: str) -> str:
  """`tokenizer_json` with the escape-deleting normaliser first and every special token
  matched on the raw text (a normalized one would be matched after the escape is gone)."""
  data = json.loads(tokenizer_json)
  if any(ESCAPE in t["content"] for t in data.get("added_tokens", [])):
    raise ValueError("an added token holds U+FDD0, which the export reserves as its escape")
  for token in data.get("added_tokens", []):
    if token.get("special"):
      token["normalized"] = False
  own = data.get("normalizer")
  if own is None:
    data["normalizer"] = ESCAPE_NORMALIZER
  elif own.get("type") == "Sequence":
    data["normalizer"] = {**own, "normalizers": [ESCAPE_NORMALIZER, *own["normalizers"]]}
  else:
    data["normalizer"] = {"type": "Sequence", "normalizers": [ESCAPE_NORMALIZER, own]}
  return json.dumps(data, indent=2, ensure_ascii=False)


def unescaped_tokenizer_data(data: dict) -> dict:
  """The tokenizer.json data `escaped_tokenizer_json` was given (its normaliser), from an
  export's: the loader reads a model's tokenizer as the model has it, whoever exported it,
  so its version and ids do not change by export (hf.HFTokenizer)."""
  own = data.get("normalizer")
  if own == ESCAPE_NORMALIZER:
    return {**data, "normalizer": None}
  if own and own.get("type") == "Sequence" and own["normalizers"][:1] == [ESCAPE_NORMALIZER]:
    rest = own["normalizers"][1:]
    return {**data, "normalizer": rest[0] if len(rest) == 1 else {**own, "normalizers": rest}}
  return data


def escape_prelude(spellings) -> str:
  """Jinja run before a model's own template: `messages` rebound with every special spelling in
  message text (content, string or text parts; reasoning_content; cot) broken by U+FDD0."""
  pairs = json.dumps([[s, s[:1] + ESCAPE + s[1:]] for s in spellings])
  return (
      "{#- deliberative: a special token spelled in message text is text (U+FDD0, deleted by the"
      " tokenizer's normaliser, breaks the spelling) -#}\n"
      "{%- set deliberative_specials = " + pairs + " -%}\n"
      "{%- macro deliberative_text(s) -%}\n"
      "  {%- set ns = namespace(t=s) -%}\n"
      "  {%- for spelling, escaped in deliberative_specials -%}"
      "{%- set ns.t = ns.t | replace(spelling, escaped) -%}{%- endfor -%}\n"
      "  {{- ns.t -}}\n"
      "{%- endmacro -%}\n"
      "{%- set ns = namespace(messages=[]) -%}\n"
      "{%- for m in messages -%}\n"
      "  {%- if m['content'] is string -%}\n"
      "    {%- set m = dict(m, content=deliberative_text(m['content'])) -%}\n"
      "  {%- elif m['content'] is iterable and m['content'] is not mapping -%}\n"
      "    {%- set parts = namespace(items=[]) -%}\n"
      "    {%- for part in m['content'] -%}\n"
      "      {%- if part is mapping and part['text'] is string -%}"
      "{%- set part = dict(part, text=deliberative_text(part['text'])) -%}{%- endif -%}\n"
      "      {%- set parts.items = parts.items + [part] -%}\n"
      "    {%- endfor -%}\n"
      "    {%- set m = dict(m, content=parts.items) -%}\n"
      "  {%- endif -%}\n"
      "  {%- if m['reasoning_content'] is string -%}"
      "{%- set m = dict(m, reasoning_content=deliberative_text(m['reasoning_content'])) -%}{%- endif -%}\n"
      "  {%- if m['cot'] is string -%}{%- set m = dict(m, cot=deliberative_text(m['cot'])) -%}{%- endif -%}\n"
      "  {%- set ns.messages = ns.messages + [m] -%}\n"
      "{%- endfor -%}\n"
      "{%- set messages = ns.messages -%}\n")


def safe_chat_template(tokenizer_json: str, template: str) -> str:
  """The model's `template` behind `escape_prelude` for `tokenizer_json`'s special tokens (the
  tokenizer.json to ship with it is `escaped_tokenizer_json(tokenizer_json)`)."""
  return escape_prelude(special_spellings(tokenizer_json)) + template
