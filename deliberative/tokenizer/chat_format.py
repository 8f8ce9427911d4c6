"""A model's own chat format as data: role markers, BOS, end of turn, stop tokens.

A `ChatFormat` says which *marker text* surrounds each message's content. The tokenizer
encodes marker text with special-token matching on (the markers are ours) and content with
matching off (a user who types "<|im_end|>" gets the characters), so one layout function,
`pieces`, serves every family; families differ only in their record.

Known families (`FAMILIES`): ChatML (SmolLM2, Qwen2.5, Qwen3) and Llama-3. `detect` picks
the family whose marker tokens the vocabulary has and the template spells, then *fits* it
to the model's own Jinja template: it renders probe conversations with the template and
reads off what the family leaves open (a default system message the template inserts when
there is none, e.g. SmolLM2's "You are a helpful AI assistant named SmolLM..."; text the
template puts before every system message, e.g. Llama-3.1's knowledge-date lines; whether
it trims message content, as Meta's Llama-3 templates do). Every probe must then render
identically from the template and from the fitted record, or loading fails naming the file.
Templates are rendered without `strftime_now`, so a date-stamping template (Llama-3.2)
falls back to its fixed default date instead of baking today's date into the format.

The assistant trace (after the conversation), in Qwen3 / DeepSeek-R1 layout:

  {assistant prefix}<think>\\n{cot}\\n</think>\\n\\n{answer}{end of turn}

Labels: prefix, `<think>` and its newline USER (the generation prompt ends there);
`{cot}\\n</think>` COT (the reasoning-end marker is the last COT token, as
data/tokenized.truncate_cot expects); `\\n\\n{answer}{end of turn}` ANSWER. The trace stops
at the end-of-turn token: the newline a ChatML template writes after `<|im_end|>` is never
generated, so it is not trained either. Earlier assistant turns are context, rendered as
the template renders them and labelled USER.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import NamedTuple

from deliberative.tokenizer.base import Segment, chat_messages

ROLES = ("system", "user", "assistant")

# What surrounds the CoT; the answer follows "\n\n" after the closing marker.
THINK_OPEN, THINK_CLOSE = "\n", "\n"
ANSWER_OPEN = "\n\n"


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """Marker text of one chat family; content goes between `role_prefix` and `role_suffix`."""

  family: str
  bos: str  # marker text before the first turn ('' when the template writes none)
  role_prefix: Mapping[str, str]  # role -> marker text before the content
  role_suffix: Mapping[str, str]  # role -> marker text after the content
  end_of_turn: str  # the token that closes a turn; generation stops on it
  stop_tokens: tuple[str, ...]  # further tokens that end generation, when in the vocabulary
  required: tuple[str, ...]  # single tokens the vocabulary must have for this family
  trim_content: bool = False  # the template strips whitespace around message content
  system_preamble: str = ""  # template text before every system message's content
  default_system: str | None = None  # system content the template adds when there is none

  def generation_prefix(self) -> str:
    return self.role_prefix["assistant"]


def _same_for_roles(text: str) -> dict[str, str]:
  return {role: text.format(role=role) for role in ROLES}


CHATML = ChatFormat(
    family="chatml",
    bos="",
    role_prefix=_same_for_roles("<|im_start|>{role}\n"),
    role_suffix=_same_for_roles("<|im_end|>\n"),
    end_of_turn="<|im_end|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    required=("<|im_start|>", "<|im_end|>"),
)

LLAMA3 = ChatFormat(
    family="llama3",
    bos="<|begin_of_text|>",
    role_prefix=_same_for_roles("<|start_header_id|>{role}<|end_header_id|>\n\n"),
    role_suffix=_same_for_roles("<|eot_id|>"),
    end_of_turn="<|eot_id|>",
    stop_tokens=("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
    required=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)

FAMILIES = {f.family: f for f in (CHATML, LLAMA3)}


class Piece(NamedTuple):
  text: str
  marker: bool  # True: encode with special-token matching on (our markers, never user text)
  label: Segment


def pieces(fmt: ChatFormat, messages, cot: str | None = None, answer: str | None = None,
           add_generation_prompt: bool = False, think: str = "<think>",
           think_end: str = "</think>") -> list[Piece]:
  """The conversation as marker and content pieces with their labels (module docstring)."""
  messages = chat_messages(messages, cot, answer, add_generation_prompt)

  out = [Piece(fmt.bos, True, Segment.USER)]
  if messages[0]["role"] != "system" and fmt.default_system is not None:
    messages = [{"role": "system", "content": fmt.default_system, "default": True}, *messages]
  for message in messages:
    role = message["role"]
    if role not in ROLES:
      raise ValueError(f"render_chat: unknown role {role!r}; valid: {sorted(ROLES)}")
    label = Segment.SYSTEM if role == "system" else Segment.USER
    content = message["content"]
    if fmt.trim_content and not message.get("default"):
      content = content.strip()
    if role == "system" and not message.get("default"):
      content = fmt.system_preamble + content
    out += [Piece(fmt.role_prefix[role], True, label), Piece(content, False, label),
            Piece(fmt.role_suffix[role], True, label)]

  if add_generation_prompt or answer is not None:
    out += [Piece(fmt.generation_prefix() + think, True, Segment.USER),
            Piece(THINK_OPEN, False, Segment.USER)]
  if answer is not None:
    out += [Piece((cot or "") + THINK_CLOSE, False, Segment.COT), Piece(think_end, True, Segment.COT),
            Piece(ANSWER_OPEN + answer, False, Segment.ANSWER),
            Piece(fmt.end_of_turn, True, Segment.ANSWER)]
  return [p for p in out if p.text]


def render_text(fmt: ChatFormat, messages, add_generation_prompt: bool = False) -> str:
  """The text a template of this format renders (no trace); used to check a fit."""
  text = "".join(p.text for p in pieces(fmt, messages))
  return text + (fmt.generation_prefix() if add_generation_prompt else "")


# ---- Detection: family from the vocabulary, details from the template -------------------

_SYS, _USR, _AST, _USR2 = "PROBE_SYSTEM", "PROBE_USER", "PROBE_ASSISTANT", "PROBE_USER_2"


def _conversation(*turns: tuple[str, str]) -> list[dict[str, str]]:
  return [{"role": role, "content": content} for role, content in turns]


# (messages, add_generation_prompt): every one must render the same from template and format.
_PROBES = (
    (_conversation(("user", _USR)), False),
    (_conversation(("user", _USR)), True),
    (_conversation(("system", _SYS), ("user", _USR)), False),
    (_conversation(("system", _SYS), ("user", _USR), ("assistant", _AST), ("user", _USR2)), False),
    (_conversation(("user", _USR), ("assistant", _AST), ("user", _USR2)), True),
    (_conversation(("system", f" {_SYS} \n"), ("user", f"\n {_USR}  "), ("assistant", f" {_AST}\n"),
                   ("user", _USR2)), False),
)


def compile_template(template: str, special_tokens: Mapping[str, str | None],
                     where: str) -> Callable[[list, bool], str]:
  """`render(messages, add_generation_prompt)` with the template, as transformers renders it."""
  try:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError as e:
    raise ImportError(f"{where}: reading a chat template needs jinja2 (pip install jinja2)") from e

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  try:
    compiled = env.from_string(template)
  except jinja2.exceptions.TemplateError as e:
    raise ValueError(f"{where}: chat template does not parse: {e}") from None
  specials = {k: v for k, v in special_tokens.items() if v is not None}

  def render(messages, add_generation_prompt):
    try:
      return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **specials)
    except jinja2.exceptions.TemplateError as e:
      raise ValueError(f"{where}: chat template fails on a plain conversation: {e}") from None

  return render


def _fit(family: ChatFormat, render, where: str) -> ChatFormat:
  """`family` with the template's preamble, default system message and trimming (module doc)."""
  with_system = render(_conversation(("system", _SYS), ("user", _USR)), False)
  head = family.bos + family.role_prefix["system"]
  if not with_system.startswith(head) or _SYS not in with_system:
    raise _mismatch(family, where, with_system, render_text(family, _PROBES[2][0]))
  preamble = with_system[len(head):with_system.index(_SYS)]

  fmt = dataclasses.replace(family, system_preamble=preamble)
  without_system = render(_conversation(("user", _USR)), False)
  tail = render_text(fmt, _conversation(("user", _USR)))[len(fmt.bos):]
  if without_system != fmt.bos + tail:
    inserted = without_system[len(head):len(without_system) - len(tail) - len(family.role_suffix["system"])]
    if not inserted.startswith(preamble):
      raise _mismatch(family, where, without_system, fmt.bos + tail)
    fmt = dataclasses.replace(fmt, default_system=inserted)

  messages, generation = _PROBES[-1]
  padded = render(messages, generation)
  if padded == render_text(dataclasses.replace(fmt, trim_content=True), messages, generation):
    fmt = dataclasses.replace(fmt, trim_content=True)

  for messages, generation in _PROBES:
    theirs, ours = render(messages, generation), render_text(fmt, messages, generation)
    if theirs != ours:
      raise _mismatch(family, where, theirs, ours)
  for text in (fmt.system_preamble, fmt.default_system or ""):
    if any(t in text for t in family.required):
      raise ValueError(f"{where}: the chat template's system text {text!r} holds marker tokens; "
                       "it cannot be encoded as plain content")
  return fmt


def _mismatch(family: ChatFormat, where: str, theirs: str, ours: str) -> ValueError:
  at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
  return ValueError(
      f"{where}: the chat template looks like {family.family} but renders a different layout "
      f"(first difference at character {at}): template {theirs!r}, {family.family} format {ours!r}")


def detect(vocabulary: set[str] | Mapping[str, int], template: str | None, special_tokens: Mapping[str, str | None],
           where: str, family: str | None = None) -> ChatFormat:
  """The format of a tokenizer: its family (by name, or whose markers the vocabulary has and
  the template spells) fitted to its template. `where` names the file in errors."""
  if family is not None and family not in FAMILIES:
    raise ValueError(f"{where}: unknown chat format {family!r}; known: {sorted(FAMILIES)}")
  if template is None:
    if family is None:
      raise ValueError(f"{where}: no chat template (tokenizer_config.json 'chat_template' or "
                       f"chat_template.jinja); name the format explicitly, one of {sorted(FAMILIES)}")
    return FAMILIES[family]
  candidates = [FAMILIES[family]] if family else [
      f for f in FAMILIES.values()
      if all(t in vocabulary for t in f.required) and any(t in template for t in f.required)]
  if not candidates:
    needs = "; ".join(f"{f.family}: {', '.join(f.required)}" for f in FAMILIES.values())
    raise ValueError(f"{where}: the chat template is none of the known formats (their marker tokens: "
                     f"{needs}); template starts {template[:200]!r}")
  missing = [t for t in candidates[0].required if t not in vocabulary]
  if missing:
    raise ValueError(f"{where}: chat format {candidates[0].family} needs tokens {missing} the vocabulary lacks")
  render = compile_template(template, special_tokens, where)
  errors = []
  for candidate in candidates:
    try:
      return _fit(candidate, render, where)
    except ValueError as e:
      errors.append(str(e))
  raise ValueError("; ".join(errors))
