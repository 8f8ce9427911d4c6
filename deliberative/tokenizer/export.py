"""Export of the sentencepiece tokenizer to a Hugging Face tokenizer directory.

`write_hf_tokenizer` builds `tokenizer.json` with the `tokenizers` library straight from
the sentencepiece model proto (transformers' own sentencepiece loaders mis-read our
model, see shared/NOTES.md), plus `tokenizer_config.json` with the chat template.

How the construction reproduces sentencepiece BPE id for id:

* Sentencepiece BPE encodes a whole (normalised) string at once: it starts from single
  characters and repeatedly merges the adjacent pair whose concatenation is a vocabulary
  piece with the highest score (ties: leftmost first). No word splitting happens at
  encode time. The HF BPE model does the same given (a) no pre-tokenizer, so the text is
  one "word", and (b) a merge list holding *every* split (left, right) of every normal
  piece with both halves in the vocabulary, ranked by the merged piece's score. The HF
  model breaks rank ties leftmost-first, as sentencepiece does.
* Our model's normaliser is the identity except that a space becomes sentencepiece's
  '▁'. Our `Tokenizer.encode` sends a literal '▁' typed by a user through byte fallback,
  so a normaliser mapping ' ' -> '▁' would make the two indistinguishable. Instead the
  HF vocabulary spells every '▁' as a real space: no normaliser is needed for spaces
  (the one HF has deletes the chat template's escape, below), and a literal '▁' is then
  a character outside the vocabulary, which HF byte fallback turns into the same
  <0xE2><0x96><0x81> ids, unmergeable, just like ours.
* Characters outside the vocabulary go through `byte_fallback=True` to the <0xXX>
  pieces, as in sentencepiece.
* Decoding is byte fallback + fuse (tokens already carry real spaces); no dummy prefix
  is stripped because the model has none.
* Control tokens (and <pad>/<unk>/<s>/</s>) are special added tokens with their
  sentencepiece ids, so the chat template can write them.

Where HF differs from `Tokenizer` (both pinned by tests/test_hf_tokenizer.py):

* Chats are safe by default: `apply_chat_template(messages)` with default arguments gives
  exactly `render_chat`'s ids, a control-token spelling typed in a message included (it
  stays text; tested). The template writes every '<' of message text (content, cot) as
  '<' + U+FDD0, so no spelling in a message can match an added token (every special
  token starts with '<'), and the tokenizer's normaliser deletes U+FDD0 again before BPE.
  Added tokens are matched on the raw text, before normalisation, so the markers the
  template writes itself still become control ids, and the text BPE sees is the message
  exactly as `render_chat` encodes it, whatever the vocabulary. The same holds for
  `apply_chat_template(..., tokenize=False)` followed by `tokenizer(rendered,
  add_special_tokens=False)` (how serving stacks call it), and with
  `sanitize_control_tokens=True` (then also id-equal with the shipped vocabulary).
* `tokenizer(text)` / `encode(text)` with default arguments are NOT safe for untrusted
  text: a control-token spelling in `text` ("<|end|>") becomes the control id. Pass
  `split_special_tokens=True` for such text (then the ids equal `Tokenizer.encode` for
  any text without U+FDD0). This cannot be made the default: in transformers 5.x
  `apply_chat_template` tokenizes the rendered chat through the same `__call__`, and the
  only switch that stops special-token matching there is `split_special_tokens`, which
  defaults to the tokenizer's own setting (`_encode_plus`, `encode_marked_chat`); writing
  `"split_special_tokens": true` into tokenizer_config.json therefore also turns the
  template's own markers into text, with or without `sanitize_control_tokens` (measured
  with 5.24, pinned by a test). Any string the template could write to get a control id,
  user text passed to `tokenizer(text)` can write too.
* U+FDD0 (a Unicode noncharacter, reserved for internal use) is deleted from all text,
  chat or not; `Tokenizer.encode` byte-falls it back. Text without it is unaffected.
* `decode` writes control tokens out (e.g. "<|end|>") unless `skip_special_tokens=True`;
  ours drops them. Decodes are equal on every id sequence `encode` can produce. They
  can differ only on ids no text encodes to: <unk> (sentencepiece writes " ⁇ ") and
  a run of byte pieces that is not valid UTF-8 (sentencepiece decodes it character by
  character with one U+FFFD per bad byte; HF's ByteFallback decoder replaces the whole
  run with one U+FFFD per byte). No HF decoder reproduces the latter.
* Merge ties: sentencepiece ranks every split of a piece equally and takes the leftmost;
  HF gives each split its own rank. No input where this changes the ids is known: 1.1M
  random strings (pieces, repeats of multi-split pieces, random characters) and random
  small vocabularies in a reference simulation all matched.
* `encode(..., add_special_tokens=True)` (the default of `hf(text)`) prepends <s>, like
  a Llama tokenizer; `add_special_tokens=False` gives exactly `Tokenizer.encode`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, normalizers, processors

from deliberative.tokenizer.escape import ESCAPE as _ESCAPE, escaped_tokenizer_json, safe_chat_template
from deliberative.tokenizer.sentencepiece import CHAT_CONTROL_TOKENS, CONTROL_TOKENS, Tokenizer

_SP_SPACE = "\u2581"
# The files write_hf_tokenizer writes (an export's --overwrite recognises them).
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
_Type = sentencepiece_model_pb2.ModelProto.SentencePiece


def _chat_template(bos: str, t: dict[str, str]) -> str:
  """Jinja for `Tokenizer.render_chat`'s layout (see `Tokenizer._render`).

  - every message: <|role|> content <|end|>; an earlier assistant turn has no <|think|>;
  - an assistant message carrying `reasoning_content` (or `cot`) is a full trace:
    <|assistant|> <|think|> cot <|answer|> content <|end|> (render_chat(cot=, answer=));
  - add_generation_prompt: <|assistant|> <|think|>.
  Markers are string literals, so transformers' `sanitize_control_tokens` sees them.
  Message text is escaped (`text` below): '<' -> '<' + U+FDD0, so it cannot spell an added
  token; the tokenizer's normaliser deletes U+FDD0 before BPE (module docstring).
  """
  return (
    "{#- Every '<' of message text gets U+FDD0 after it, which the tokenizer's normaliser deletes:"
    " text cannot spell a control token, and tokenizes as written. -#}\n"
    "{%- macro text(s) -%}{{- s | replace('<', '<" + _ESCAPE + "') -}}{%- endmacro -%}\n"
    "{{- '" + bos + "' -}}\n"
    "{%- for message in messages -%}\n"
    "  {%- set role = message['role'] -%}\n"
    "  {%- if message['content'] is not string -%}\n"
    "    {{- raise_exception('message content must be a string') -}}\n"
    "  {%- endif -%}\n"
    "  {%- if role == 'system' -%}\n"
    "    {{- '" + t["system"] + "' + text(message['content']) + '" + t["end"] + "' -}}\n"
    "  {%- elif role == 'user' -%}\n"
    "    {{- '" + t["user"] + "' + text(message['content']) + '" + t["end"] + "' -}}\n"
    "  {%- elif role == 'assistant' -%}\n"
    "    {%- if message['reasoning_content'] is defined or message['cot'] is defined -%}\n"
    "      {%- set cot = message['reasoning_content'] if message['reasoning_content'] is defined"
    " else message['cot'] -%}\n"
    "      {{- '" + t["assistant"] + t["think"] + "' + text(cot) + '" + t["answer"] + "'"
    " + text(message['content']) + '" + t["end"] + "' -}}\n"
    "    {%- else -%}\n"
    "      {{- '" + t["assistant"] + "' + text(message['content']) + '" + t["end"] + "' -}}\n"
    "    {%- endif -%}\n"
    "  {%- else -%}\n"
    "    {{- raise_exception('unknown role ' + role + '; valid: assistant, system, user') -}}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '" + t["assistant"] + t["think"] + "' -}}\n"
    "{%- endif -%}\n"
  )


def _build_backend(proto: sentencepiece_model_pb2.ModelProto) -> HFTokenizer:
  """The `tokenizers` object equivalent to sentencepiece BPE on `proto` (module doc)."""
  if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
    raise ValueError("only sentencepiece BPE models can be exported")
  norm = proto.normalizer_spec
  if norm.precompiled_charsmap or norm.add_dummy_prefix or norm.remove_extra_whitespaces:
    # Our trainer settings make the normaliser the identity (plus ' ' -> '▁'); anything
    # else would need an HF normaliser this export does not build.
    raise ValueError("export needs identity normalisation without dummy prefix or "
                     "whitespace removal (deliberative.tokenizer.sentencepiece.TRAINER_SETTINGS)")
  if not proto.trainer_spec.byte_fallback:
    raise ValueError("export needs a byte_fallback model")

  vocab: dict[str, int] = {}
  normal: dict[str, int] = {}
  for i, p in enumerate(proto.pieces):
    if p.type in (_Type.USER_DEFINED, _Type.UNUSED):
      # Sentencepiece matches user-defined pieces greedily in text and resegments unused
      # ones; neither is reproduced here, and our trainer settings create neither.
      raise ValueError(f"piece {p.piece!r} has unsupported type {p.type}")
    token = p.piece.replace(_SP_SPACE, " ") if p.type == _Type.NORMAL else p.piece
    if _ESCAPE in token:  # the normaliser deletes it, so such a piece could never be produced
      raise ValueError(f"piece {p.piece!r} holds U+FDD0, which the export reserves as its escape")
    if token in vocab:
      raise ValueError(f"piece {p.piece!r} collides with another piece once '▁' -> ' '")
    vocab[token] = i
    if p.type == _Type.NORMAL:
      normal[token] = i

  scores = [proto.pieces[i].score for i in normal.values()]
  if len(set(scores)) != len(scores):
    # Sentencepiece breaks equal-score ties by position; HF ranks are distinct.
    raise ValueError("normal pieces must have distinct scores")
  for token in normal:
    # HF byte-falls-back an out-of-vocabulary character before merging, so every
    # character of a mergeable piece must be a piece itself (true for a trained model).
    missing = [c for c in token if c not in normal]
    if missing:
      raise ValueError(f"piece {token!r} uses characters {missing} that are not pieces")

  # Every way to build each piece from two pieces, best score first: sentencepiece
  # merges any adjacent pair whose concatenation is a piece, ranked by that piece's score.
  merges: list[tuple[str, str]] = []
  for token, i in sorted(normal.items(), key=lambda kv: (-proto.pieces[kv[1]].score, kv[1])):
    for k in range(1, len(token)):
      if token[:k] in normal and token[k:] in normal:
        merges.append((token[:k], token[k:]))

  unk = proto.pieces[proto.trainer_spec.unk_id].piece
  backend = HFTokenizer(models.BPE(
    vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=False,
    ignore_merges=False, dropout=None,
  ))
  # The normaliser only deletes the chat template's escape (module docstring); it runs after
  # added tokens are matched on the raw text. No pre-tokenizer: sentencepiece does not split
  # words at encode time.
  backend.normalizer = normalizers.Replace(_ESCAPE, "")
  backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])

  special_ids = [i for i, p in enumerate(proto.pieces) if p.type in (_Type.CONTROL, _Type.UNKNOWN)]
  unescaped = [proto.pieces[i].piece for i in special_ids if not proto.pieces[i].piece.startswith("<")]
  if unescaped:  # the chat template breaks spellings in messages at '<' only
    raise ValueError(f"special pieces {unescaped} do not start with '<'; the chat template could not escape them")
  backend.add_special_tokens([
    AddedToken(proto.pieces[i].piece, special=True, normalized=False, lstrip=False,
               rstrip=False, single_word=False)
    for i in special_ids
  ])
  for i in special_ids:  # added tokens must keep their sentencepiece ids
    if backend.token_to_id(proto.pieces[i].piece) != i:
      raise AssertionError(f"added token {proto.pieces[i].piece!r} lost its id {i}")

  bos = proto.pieces[proto.trainer_spec.bos_id].piece
  bos_id = proto.trainer_spec.bos_id
  # add_special_tokens=True prepends <s>, as every rendered chat starts with it.
  backend.post_processor = processors.TemplateProcessing(
    single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)],
  )
  return backend


def hf_generation_config(tokenizer) -> dict:
  """Token ids for generation_config.json: generation stops where our sampler stops
  (sentencepiece: <|end|> or </s>; a real model: its end of turn and end-of-sequence ids)."""
  out = {"eos_token_id": list(tokenizer.stop_ids), "pad_token_id": tokenizer.pad_id}
  if tokenizer.bos_id is not None:
    out["bos_token_id"] = tokenizer.bos_id
  return out


def write_hf_tokenizer(tokenizer, out_dir: str | os.PathLike, reasoning: bool = True) -> None:
  """Writes the tokenizer files into the existing directory `out_dir`, loadable with
  `transformers.AutoTokenizer.from_pretrained(out_dir)`: for the sentencepiece model,
  tokenizer.json, tokenizer_config.json, special_tokens_map.json and tokenizer.model; for a
  real model's tokenizer (tokenizer.hf.HFTokenizer), `write_json_tokenizer` (`reasoning` as there)."""
  out = Path(out_dir)
  if not out.is_dir():
    raise FileNotFoundError(f"{out} is not a directory")
  if not isinstance(tokenizer, Tokenizer):
    write_json_tokenizer(tokenizer, out, reasoning=reasoning)
    return
  if not reasoning:
    raise ValueError("the sentencepiece tokenizer's markers are its own; it is always exported whole")
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(tokenizer.model_proto)
  backend = _build_backend(proto)
  backend.save(str(out / "tokenizer.json"))

  spec = proto.trainer_spec
  piece = lambda i: proto.pieces[i].piece  # noqa: E731
  named = {
    "bos_token": piece(spec.bos_id), "eos_token": piece(spec.eos_id),
    "pad_token": piece(spec.pad_id), "unk_token": piece(spec.unk_id),
  }
  # Names and spellings read from the model, not hard-coded ids.
  controls = {t[2:-2]: tokenizer.id_to_piece(tokenizer.control_id(t)) for t in CHAT_CONTROL_TOKENS}
  extra = [tokenizer.id_to_piece(tokenizer.control_id(t)) for t in CONTROL_TOKENS]
  added = {
    str(i): {"content": p.piece, "lstrip": False, "normalized": False, "rstrip": False,
             "single_word": False, "special": True}
    for i, p in enumerate(proto.pieces) if p.type in (_Type.CONTROL, _Type.UNKNOWN)
  }
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    **named,
    "extra_special_tokens": extra,
    "added_tokens_decoder": added,
    "add_bos_token": True,
    "add_eos_token": False,
    # The ids are already exact; HF's space clean-up would alter decoded text.
    "clean_up_tokenization_spaces": False,
    # True would make `tokenizer(text)` safe but turn the chat template's own markers into text
    # too (module docstring); chats are made safe by the template instead.
    "split_special_tokens": False,
    "chat_control_tokens": extra,
    "model_max_length": 1 << 20,
    "chat_template": _chat_template(named["bos_token"], controls),
  }
  (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
  special_map = {**named, "additional_special_tokens": extra}
  (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
  (out / "tokenizer.model").write_bytes(tokenizer.model_proto)


def _reasoning_prelude(tokenizer) -> str:
  """Jinja run before a model's own template: an assistant message with `reasoning_content`
  (the field reasoning servers and deliberative.serve return; `cot` also accepted) becomes the
  trace layout in its content, `<think>\\n{cot}\\n</think>\\n\\n{answer}` (chat_format), so the
  model's template, which knows nothing of reasoning, renders our trace ids. `messages` is
  rebound at the template's top level; list concatenation keeps it sandbox-safe."""
  from deliberative.tokenizer import chat_format
  opening = json.dumps(tokenizer.think_token + chat_format.THINK_OPEN)
  closing = json.dumps(chat_format.THINK_CLOSE + tokenizer.think_end_token + chat_format.ANSWER_OPEN)
  return (
      "{#- deliberative: assistant reasoning_content -> the trace layout in content -#}\n"
      "{%- set ns = namespace(messages=[]) -%}\n"
      "{%- for m in messages -%}\n"
      "  {%- set cot = m['reasoning_content'] if m['reasoning_content'] is defined and m['reasoning_content'] "
      "is not none else (m['cot'] if m['cot'] is defined else none) -%}\n"
      "  {%- if m['role'] == 'assistant' and cot is not none -%}\n"
      "    {%- set ns.messages = ns.messages + [{'role': 'assistant', 'content': " + opening
      + " + cot + " + closing + " + m['content']}] -%}\n"
      "  {%- else -%}\n"
      "    {%- set ns.messages = ns.messages + [m] -%}\n"
      "  {%- endif -%}\n"
      "{%- endfor -%}\n"
      "{%- set messages = ns.messages -%}\n")


def write_json_tokenizer(tokenizer, out: Path, reasoning: bool = True) -> None:
  """A real model's tokenizer as trained: tokenizer.json with its added reasoning markers
  (special tokens, so `decode(..., skip_special_tokens=True)` drops them), and
  tokenizer_config.json whose chat template is the model's own with the reasoning marker after
  the generation prompt, so `apply_chat_template(messages, add_generation_prompt=True)` gives
  exactly `render_chat(messages, add_generation_prompt=True)`'s ids (tested). The model's own
  template is kept under MODEL_TEMPLATE_KEY: our loader fits the chat format to it.

  reasoning=False: the model's tokenizer and template as they came, without the markers this
  project added (`tokenizer.added_tokens`), for weights that have no rows for them (an imported
  model not trained here). Either way the template is made safe (`safe_chat_template`): a
  special token spelled in message text is text under transformers' default
  `apply_chat_template`."""
  from deliberative.tokenizer import chat_format
  from deliberative.tokenizer.hf import MODEL_TEMPLATE_KEY

  tokenizer_json, config, template = tokenizer.hf_files(with_added_tokens=reasoning)
  if template is None:
    raise ValueError(f"tokenizer {tokenizer.version}: no chat template to export")
  shipped = template
  if reasoning:
    # Around the model's template: traces in, the reasoning marker after the generation prompt
    # (its generation prompt ends the assistant header; a trained model then writes its
    # reasoning between the markers).
    opened = json.dumps(tokenizer.think_token + chat_format.THINK_OPEN)
    shipped = (_reasoning_prelude(tokenizer) + template
               + "{%- if add_generation_prompt -%}{{- " + opened + " -}}{%- endif -%}")
  config.update({
    "tokenizer_class": "PreTrainedTokenizerFast",
    MODEL_TEMPLATE_KEY: template,
    # The escape runs first, so the reasoning markers the prelude writes stay control tokens.
    "chat_template": safe_chat_template(tokenizer_json, shipped),
    "clean_up_tokenization_spaces": False,  # the ids are exact; HF's clean-up would alter decoded text
  })
  config.pop("added_tokens_decoder", None)  # tokenizer.json holds the added tokens, the new ones too
  (out / "tokenizer.json").write_text(escaped_tokenizer_json(tokenizer_json) + "\n", encoding="utf-8")
  (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
  special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if config.get(k)}
  (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
