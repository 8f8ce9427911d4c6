"""The Hugging Face `tokenizer.json` backend: the `Tokenizer` interface over any real model.

Read with the `tokenizers` library alone (no torch, no transformers). The chat format is
the model's own (deliberative.tokenizer.chat_format); the CoT sits between reasoning markers chosen
in this order:

1. the vocabulary's own `<think>` / `</think>`, when both are added tokens (Qwen3,
   DeepSeek-R1 distills);
2. else the two lowest-numbered unused `<|reserved_special_token_N|>` (Llama-3 has 248+).
   Their ids are what matter; they keep their reserved spelling in the vocabulary, so
   `id_to_piece` shows it and `think_token` / `think_end_token` name it;
3. else `<think>` / `</think>` are added as new special tokens with ids `vocab_size` and
   `vocab_size + 1` of the file; `added_tokens` lists them and `vocab_size` counts them,
   so the caller knows to grow the embedding.

Unforgeable markers: every token the format uses (role markers, BOS/EOS, stop tokens, the
reasoning markers) is made a *special* added token in our copy of the vocabulary, even
where the file marks it non-special (Qwen3's `<think>`), and text is encoded with
`encode_special_tokens = True` (special-token matching off), which also gives the ids of
`transformers`' `tokenizer(text, add_special_tokens=False, split_special_tokens=True)`.
Loading checks that no marker's spelling encodes to a control id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as _Backend

from deliberative.tokenizer import chat_format as chat_format_lib
from deliberative.tokenizer.base import Completion, Segment, split_completion
from deliberative.tokenizer.escape import unescaped_tokenizer_data

# The reasoning markers a vocabulary may already have, and the spelling used when adding.
THINK, THINK_END = "<think>", "</think>"
_RESERVED = re.compile(r"<\|reserved_special_token_(\d+)\|>")
# Names `control_id` knows, as in the sentencepiece backend (`<|end|>` or `end`).
_CONTROL_NAMES = {"end": "end_id", "think": "think_id", "answer": "answer_id"}


def _token_text(value) -> str | None:
  """tokenizer_config.json spells a special token as a string or an AddedToken dict."""
  if isinstance(value, Mapping):
    return value.get("content")
  return value


# tokenizer_config.json key of an export (deliberative/tokenizer/export.py): the model's own template,
# before the reasoning marker was appended to its generation prompt. The format is fitted to it.
MODEL_TEMPLATE_KEY = "deliberative_model_chat_template"


def _read_chat_template(directory: Path, config: Mapping) -> str | None:
  template = config.get(MODEL_TEMPLATE_KEY) or config.get("chat_template")
  if isinstance(template, list):  # [{name, template}, ...]: the default one
    template = next((t["template"] for t in template if t.get("name") == "default"), None)
  if template is None and (directory / "chat_template.jinja").exists():
    template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
  return template


class HFTokenizer:
  """A `tokenizer.json` with the model's chat format and the project's `Tokenizer` interface."""

  def __init__(self, tokenizer_json: str, config: Mapping | None = None, chat_template: str | None = None,
               where: str = "tokenizer.json", chat_format: str | None = None):
    self._state = dict(tokenizer_json=tokenizer_json, config=dict(config or {}), chat_template=chat_template,
                       where=where, chat_format=chat_format)
    config = self._state["config"]
    # An export's escape (tokenizer/export.py) is for transformers' chat template; the model's
    # tokenizer is what it wraps, so an exported model loads with the ids and version it had.
    data = unescaped_tokenizer_data(json.loads(tokenizer_json))
    added = {t["content"]: t for t in data.get("added_tokens", [])}
    specials = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    self.format = chat_format_lib.detect(added, chat_template, specials, where, chat_format)
    fmt = self.format

    backend = _Backend.from_str(tokenizer_json)
    base_size = backend.get_vocab_size(with_added_tokens=True)
    markers = [fmt.end_of_turn, *fmt.required, *(t for t in fmt.stop_tokens if t in added),
               *(t for t in specials.values() if t in added)]
    self.think_token, self.think_end_token = self._reasoning_markers(added, set(markers))
    # Re-marking the format's tokens special makes encode_special_tokens split them and decode skip them.
    for token in {*markers, self.think_token, self.think_end_token}:
      if token in added:
        added[token]["special"] = True
    backend = _Backend.from_str(json.dumps(data))
    self._without_added = backend.to_str(pretty=True)  # the model's own vocabulary, for weights without our rows
    new = [t for t in (self.think_token, self.think_end_token) if t not in added]
    if new:
      backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    self.added_tokens = tuple((t, backend.token_to_id(t)) for t in new)
    if any(i < base_size for _, i in self.added_tokens):
      raise ValueError(f"{where}: {THINK}/{THINK_END} are ordinary vocabulary entries, not added tokens; "
                       "user text would spell them")

    backend.encode_special_tokens = True  # from here on, text never matches a special token
    self._backend = backend
    self.control_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
    # Marker text as (special id, None) and (None, plain text) parts; `_render` encodes plain
    # text together with the content next to it, as transformers encodes the text between
    # two special tokens as one string (BPE merges may cross the marker/content border).
    spellings = sorted((backend.id_to_token(i) for i in self.control_ids), key=len, reverse=True)
    splitter = re.compile("(" + "|".join(map(re.escape, spellings)) + ")")
    self._marker_parts: dict[str, list[tuple[int | None, str | None]]] = {}
    for text in {fmt.bos, *fmt.role_prefix.values(), *fmt.role_suffix.values(), fmt.end_of_turn,
                 fmt.generation_prefix() + self.think_token, self.think_end_token}:
      self._marker_parts[text] = [(backend.token_to_id(part), None) if k % 2 else (None, part)
                                  for k, part in enumerate(splitter.split(text)) if part]

    tid = backend.token_to_id
    self.think_id, self.answer_id = tid(self.think_token), tid(self.think_end_token)
    self.end_id = tid(fmt.end_of_turn)
    self.eos_id = tid(specials["eos_token"]) if specials["eos_token"] in added else self.end_id
    self.bos_id = tid(fmt.bos) if fmt.bos else None
    self.pad_id = tid(specials["pad_token"]) if specials["pad_token"] in added else self.eos_id
    self.unk_id = tid(specials["unk_token"]) if specials["unk_token"] else None
    self.stop_ids = tuple(dict.fromkeys([self.end_id, self.eos_id] + [tid(t) for t in fmt.stop_tokens if t in added]))
    self._check_unforgeable(where)

  @staticmethod
  def _reasoning_markers(added: Mapping[str, dict], used: set[str]) -> tuple[str, str]:
    if THINK in added and THINK_END in added:
      return THINK, THINK_END
    reserved = sorted((int(m.group(1)), t) for t in added if (m := _RESERVED.fullmatch(t)) and t not in used)
    if len(reserved) >= 2:
      return reserved[0][1], reserved[1][1]
    return THINK, THINK_END

  def _check_unforgeable(self, where: str):
    for token_id in self.control_ids:
      spelling = self._backend.id_to_token(token_id)
      forged = self.control_ids & set(self.encode(f"a{spelling} {spelling}\n"))
      if forged:
        raise ValueError(f"{where}: plain text {spelling!r} encodes to special ids {sorted(forged)}")

  @classmethod
  def load(cls, path: str | os.PathLike, chat_format: str | None = None) -> "HFTokenizer":
    """A Hugging Face directory, or a tokenizer.json with tokenizer_config.json beside it."""
    path = Path(path)
    json_path = path / "tokenizer.json" if path.is_dir() else path
    if not json_path.exists():
      raise FileNotFoundError(f"{json_path}: no such tokenizer.json")
    config_path = json_path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    return cls(json_path.read_text(encoding="utf-8"), config, _read_chat_template(json_path.parent, config),
               where=str(json_path), chat_format=chat_format)

  # Pickling support, so the tokenizer can travel to grain worker processes.
  def __getstate__(self):
    return self._state

  def hf_files(self, with_added_tokens: bool = True) -> tuple[str, dict, str | None]:
    """(tokenizer.json text, `added_tokens` included unless with_added_tokens=False; the model's
    tokenizer_config.json entries; its chat template) for an export. Special-token matching is
    not stored in tokenizer.json: transformers matches the markers its template writes, as it must."""
    text = self._backend.to_str(pretty=True) if with_added_tokens else self._without_added
    return text, dict(self._state["config"]), self._state["chat_template"]

  def __setstate__(self, state):
    self.__init__(**state)

  @functools.cached_property
  def version(self) -> str:
    """Content hash of the vocabulary and chat format: same version, same ids."""
    fmt = self.format
    parts = [self._backend.to_str(), fmt.family, fmt.bos, json.dumps(fmt.role_prefix, sort_keys=True),
             json.dumps(fmt.role_suffix, sort_keys=True), fmt.end_of_turn, str(fmt.trim_content),
             fmt.system_preamble, repr(fmt.default_system), self.think_token, self.think_end_token,
             repr(chat_format_lib.THINK_OPEN + chat_format_lib.THINK_CLOSE + chat_format_lib.ANSWER_OPEN)]
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:12]

  @property
  def vocab_size(self) -> int:
    """Ids in use, including `added_tokens` (the embedding must have at least this many rows)."""
    return self._backend.get_vocab_size(with_added_tokens=True)

  def control_id(self, name: str) -> int:
    """Id of a chat marker by project name ("end"/"<|end|>", "think", "answer") or of any
    special token by its exact spelling ("<|im_end|>")."""
    bare = name[2:-2] if name.startswith("<|") and name.endswith("|>") else name
    if bare in _CONTROL_NAMES:
      return getattr(self, _CONTROL_NAMES[bare])
    token_id = self._backend.token_to_id(name)
    if token_id is None or token_id not in self.control_ids:
      raise KeyError(f"unknown control token {name!r}; known: {sorted(_CONTROL_NAMES)} "
                     "and the vocabulary's special tokens")
    return token_id

  def id_to_piece(self, token_id: int) -> str:
    return self._backend.id_to_token(int(token_id))

  def marker_ids(self, text: str) -> list[int]:
    """Ids of format marker text (e.g. `format.role_prefix['system']`), special tokens matched."""
    ids: list[int] = []
    for token_id, part in self._marker_parts[text]:
      ids.extend([token_id] if token_id is not None else self.encode(part))
    return ids

  def encode(self, text: str) -> list[int]:
    """Token ids of plain text; never a special id (special-token matching is off)."""
    return self._backend.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; special ids (markers, padding) contribute nothing."""
    return self._backend.decode([int(i) for i in ids], skip_special_tokens=True)

  def render_chat(self, messages: str | Sequence[Mapping[str, str]], cot: str | None = None,
                  answer: str | None = None, add_generation_prompt: bool = False) -> tuple[list[int], list[Segment]]:
    """Ids and per-token `Segment` labels (layout: deliberative.tokenizer.chat_format). Arguments as
    `Tokenizer.render_chat`."""
    ids, runs = self._render(messages, cot, answer, add_generation_prompt)
    labels: list[Segment] = []
    for label, count in runs:
      labels.extend([label] * count)
    return ids, labels

  def render_chat_arrays(self, messages: str | Sequence[Mapping[str, str]], cot: str | None = None,
                         answer: str | None = None,
                         add_generation_prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """render_chat() as numpy arrays (int32 ids, int8 labels), for the input pipeline."""
    ids, runs = self._render(messages, cot, answer, add_generation_prompt)
    labels = np.repeat(np.array([r[0] for r in runs], np.int8), [r[1] for r in runs])
    return np.asarray(ids, np.int32), labels

  def _render(self, messages, cot, answer, add_generation_prompt):
    ids: list[int] = []
    runs: list[tuple[Segment, int]] = []
    text, text_label = "", None  # plain text not yet encoded, all of one label

    def flush():
      if text:
        text_ids = self.encode(text)
        ids.extend(text_ids)
        runs.append((text_label, len(text_ids)))

    for piece in chat_format_lib.pieces(self.format, messages, cot, answer, add_generation_prompt,
                                        self.think_token, self.think_end_token):
      for token_id, part in self._marker_parts[piece.text] if piece.marker else [(None, piece.text)]:
        if token_id is not None:
          flush()
          text, text_label = "", None
          ids.append(token_id)
          runs.append((piece.label, 1))
        elif text and text_label != piece.label:
          flush()
          text, text_label = part, piece.label
        else:
          text, text_label = text + part, piece.label
    flush()
    return ids, runs

  def parse_completion(self, ids: Iterable[int], reasoning: bool = True) -> Completion:
    """Splits tokens generated after a generation prompt into CoT and answer.

    Generation ends at the first stop id or padding. Well formed, as in the sentencepiece
    backend: exactly one reasoning-end marker, closed by the end-of-turn token, no other
    special token, a non-blank answer. The separators the trace layout adds (the newline
    before the marker, the blank line after it) are removed from the texts.
    """
    body: list[int] = []
    closed = False
    for token in ids:
      token = int(token)
      if token in self.stop_ids or token == self.pad_id:
        closed = token == self.end_id
        break
      body.append(token)
    return split_completion(body, closed, self.answer_id, self.control_ids, self.decode,
                            cot_suffix=chat_format_lib.THINK_CLOSE, answer_prefix=chat_format_lib.ANSWER_OPEN,
                            reasoning=reasoning)
