"""Sentencepiece tokenizer and the chat format whose role markers text cannot forge.

Chat layout (one text segment is encoded at a time; control tokens sit between them):

  <s> [<|system|> SYS <|end|>] <|user|> USER <|end|> <|assistant|> <|think|> COT
    <|answer|> ANSWER <|end|>

A generation prompt ends right after `<|think|>`. Every token carries a `Segment` label,
from which the input pipeline derives the loss mask.

Role markers are sentencepiece *control* symbols: the encoder never produces them from
text, so a user who types "<|end|>" gets the characters, not the marker. (Sentencepiece
*user-defined* symbols would be matched in text, which is why they are not used.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from deliberative.tokenizer.base import Completion, Segment, chat_messages, split_completion

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "assets" / "tokenizer.model"

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

CHAT_CONTROL_TOKENS = (
  "<|system|>",
  "<|user|>",
  "<|assistant|>",
  "<|think|>",
  "<|answer|>",
  "<|end|>",
  "<|quote|>",
  "<|/quote|>",
  "<|grade|>",
)
# Spare markers so a later format change does not need a new vocabulary.
RESERVED_CONTROL_TOKENS = tuple(f"<|reserved_{i}|>" for i in range(8))
CONTROL_TOKENS = CHAT_CONTROL_TOKENS + RESERVED_CONTROL_TOKENS

# Sentencepiece trainer settings; tools/train_tokenizer.py adds corpus, size and output.
# identity normalisation + no dummy prefix + kept whitespace = exact text round trip;
# byte_fallback = no <unk> for unseen characters.
TRAINER_SETTINGS = dict(
  model_type="bpe",
  pad_id=PAD_ID,
  unk_id=UNK_ID,
  bos_id=BOS_ID,
  eos_id=EOS_ID,
  pad_piece="<pad>",
  unk_piece="<unk>",
  bos_piece="<s>",
  eos_piece="</s>",
  control_symbols=list(CONTROL_TOKENS),
  byte_fallback=True,
  normalization_rule_name="identity",
  add_dummy_prefix=False,
  remove_extra_whitespaces=False,
  allow_whitespace_only_pieces=True,
  split_digits=True,
  character_coverage=1.0,
  max_sentence_length=1 << 20,
  num_threads=1,  # one thread, so thread scheduling cannot influence the trained model
)

# Sentencepiece's internal whitespace symbol; a literal one in user text would decode
# back as a space, so it is encoded through byte fallback instead.
_SP_SPACE = "\u2581"


class Tokenizer:
  """A sentencepiece model with the project's fixed special ids and chat format."""

  def __init__(self, model_proto: bytes):
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self._check_layout()
    self._control_by_name = {t: self._sp.piece_to_id(t) for t in CONTROL_TOKENS}
    self.control_ids = frozenset(
      i for i in range(self._sp.get_piece_size()) if self._sp.is_control(i)
    )
    self._space_byte_ids = [
      self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SP_SPACE.encode("utf-8")
    ]
    c = self._control_by_name
    self.system_id, self.user_id = c["<|system|>"], c["<|user|>"]
    self.assistant_id, self.think_id = c["<|assistant|>"], c["<|think|>"]
    self.answer_id, self.end_id = c["<|answer|>"], c["<|end|>"]

  @classmethod
  def load(cls, path: str | os.PathLike | None = None) -> "Tokenizer":
    """Loads `path`, or the model shipped in deliberative/assets/ by default."""
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.exists():
      raise FileNotFoundError(
        f"tokenizer model {path} not found; build one with "
        "`python tools/train_tokenizer.py`"
      )
    return cls(path.read_bytes())

  def _check_layout(self):
    sp = self._sp
    expected = {PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "</s>"}
    for i, token in enumerate(CONTROL_TOKENS, start=EOS_ID + 1):
      expected[i] = token
    for i, piece in expected.items():
      if sp.id_to_piece(i) != piece:
        raise ValueError(
          f"tokenizer model has {sp.id_to_piece(i)!r} at id {i}, expected {piece!r}"
        )
      if i != UNK_ID and not sp.is_control(i):
        raise ValueError(f"tokenizer piece {piece!r} (id {i}) is not a control symbol")
    if not sp.is_byte(sp.piece_to_id("<0x00>")):
      raise ValueError("tokenizer model lacks byte fallback pieces")

  # Pickling support, so the tokenizer can travel to grain worker processes.
  def __getstate__(self):
    return {"model_proto": self._proto}

  def __setstate__(self, state):
    self.__init__(state["model_proto"])

  @property
  def model_proto(self) -> bytes:
    return self._proto

  @property
  def version(self) -> str:
    """Content hash of the model: two tokenizers with the same version give the same ids."""
    return hashlib.sha256(self._proto).hexdigest()[:12]

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  pad_id = PAD_ID
  unk_id = UNK_ID
  bos_id = BOS_ID
  eos_id = EOS_ID

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation: the end of a turn, and end of sequence."""
    return (self.end_id, self.eos_id)

  def control_id(self, name: str) -> int:
    """Id of a control token, by its spelling ("<|end|>") or bare name ("end")."""
    token = name if name.startswith("<|") else f"<|{name}|>"
    try:
      return self._control_by_name[token]
    except KeyError:
      raise KeyError(f"unknown control token {name!r}; known: {CONTROL_TOKENS}") from None

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))

  def encode(self, text: str) -> list[int]:
    """Token ids of plain text; never a control id, and decode() gives `text` back."""
    if _SP_SPACE not in text:
      return self._sp.encode(text)
    ids: list[int] = []
    for k, part in enumerate(text.split(_SP_SPACE)):
      if k:
        ids.extend(self._space_byte_ids)
      if part:
        ids.extend(self._sp.encode(part))
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; control and padding ids contribute nothing."""
    return self._sp.decode([int(i) for i in ids])

  def render_chat(
      self,
      messages: str | Sequence[Mapping[str, str]],
      cot: str | None = None,
      answer: str | None = None,
      add_generation_prompt: bool = False,
  ) -> tuple[list[int], list[Segment]]:
    """Ids and per-token `Segment` labels of a conversation (CONTRACTS.md layout).

    `messages` is a list of {role, content} with roles system/user/assistant (an
    earlier assistant turn is context, labelled USER), or a bare user string. With
    `answer` the trace is complete (`cot` defaults to empty); with
    `add_generation_prompt` it stops after `<|think|>`; with neither it stops after
    the conversation.
    """
    ids, runs = self._render(messages, cot, answer, add_generation_prompt)
    labels: list[Segment] = []
    for label, count in runs:
      labels.extend([label] * count)
    return ids, labels

  def render_chat_arrays(
      self,
      messages: str | Sequence[Mapping[str, str]],
      cot: str | None = None,
      answer: str | None = None,
      add_generation_prompt: bool = False,
  ) -> tuple[np.ndarray, np.ndarray]:
    """render_chat() as numpy arrays (int32 ids, int8 labels), for the input pipeline."""
    ids, runs = self._render(messages, cot, answer, add_generation_prompt)
    labels = np.repeat(np.array([r[0] for r in runs], np.int8), [r[1] for r in runs])
    return np.asarray(ids, np.int32), labels

  def _render(self, messages, cot, answer, add_generation_prompt):
    """Ids and the labels as runs of (Segment, count)."""
    messages = chat_messages(messages, cot, answer, add_generation_prompt)

    ids: list[int] = [self.bos_id]
    runs: list[tuple[Segment, int]] = [(Segment.USER, 1)]

    def add(piece_ids: list[int], label: Segment):
      ids.extend(piece_ids)
      runs.append((label, len(piece_ids)))

    role_markers = {"system": self.system_id, "user": self.user_id, "assistant": self.assistant_id}
    for message in messages:
      role = message["role"]
      if role not in role_markers:
        raise ValueError(f"render_chat: unknown role {role!r}; valid: {sorted(role_markers)}")
      label = Segment.SYSTEM if role == "system" else Segment.USER
      add([role_markers[role], *self.encode(message["content"]), self.end_id], label)

    if add_generation_prompt or answer is not None:
      add([self.assistant_id, self.think_id], Segment.USER)
    if answer is not None:
      add([*self.encode(cot or ""), self.answer_id], Segment.COT)
      add([*self.encode(answer), self.end_id], Segment.ANSWER)
    return ids, runs

  def parse_completion(self, ids: Iterable[int], reasoning: bool = True) -> Completion:
    """Splits tokens generated after a generation prompt into CoT and answer.

    Generation ends at the first `<|end|>`, `</s>` or padding. The completion is well
    formed when exactly one `<|answer|>` precedes a closing `<|end|>`, no other control
    token appears, and the answer is not blank.
    """
    body: list[int] = []
    closed = False
    for token in ids:
      token = int(token)
      if token in (self.end_id, self.eos_id, self.pad_id):
        closed = token == self.end_id
        break
      body.append(token)
    return split_completion(body, closed, self.answer_id, self.control_ids, self.decode, reasoning=reasoning)
