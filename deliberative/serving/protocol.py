"""OpenAI chat-completions wire format: request validation, response bodies, stream chunks.

Pure functions over dicts, no model and no sockets, so every rule here is visible in one
place: which fields are honoured, which are refused (400, naming the field) and which are
ignored. A request that would change what the model is asked (stop strings, tools, logprobs,
a JSON response format) is refused rather than half-served.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# 'developer' is what newer OpenAI clients send for a system message.
ROLES = {'system': 'system', 'developer': 'system', 'user': 'user', 'assistant': 'assistant'}
# Fields with a meaning this server cannot honour: refused when set to anything but "off".
_UNSUPPORTED = ('stop', 'tools', 'functions', 'logprobs', 'top_logprobs', 'logit_bias', 'audio', 'prediction')


class RequestError(Exception):
  """A request the server refuses; becomes an OpenAI error body with `status`."""

  def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400,
               type: str = 'invalid_request_error'):
    super().__init__(message)
    self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

  def body(self) -> dict[str, Any]:
    return error_body(self.message, param=self.param, code=self.code, type=self.type)


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               type: str = 'invalid_request_error') -> dict[str, Any]:
  return {'error': {'message': message, 'type': type, 'param': param, 'code': code}}


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  """A validated chat-completions request; `max_tokens` None = as many as the context allows."""
  model: str
  messages: list[dict[str, str]]
  n: int = 1
  temperature: float = 1.0
  top_p: float = 1.0
  max_tokens: int | None = None
  seed: int | None = None
  stream: bool = False
  include_usage: bool = False


@dataclasses.dataclass(frozen=True)
class Choice:
  """One generated completion, split into reasoning (CoT) and answer."""
  reasoning: str | None  # None: the prompt opened no reasoning block
  content: str
  finish_reason: str  # 'stop' | 'length'
  completion_tokens: int  # generated ids, the stop token included
  well_formed: bool


# -- requests -------------------------------------------------------------------------------------

def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _content_text(content, where: str) -> str:
  """A message's text: a string, or a list of {"type": "text", "text": ...} parts joined."""
  if isinstance(content, str):
    return content
  if isinstance(content, list) and content and all(
      isinstance(p, Mapping) and p.get('type') == 'text' and isinstance(p.get('text'), str) for p in content):
    return ''.join(p['text'] for p in content)
  raise RequestError(f'{where} must be a string (or a list of text parts); got {type(content).__name__}',
                     param=where, code='invalid_type')


def parse_messages(messages) -> list[dict[str, str]]:
  if not isinstance(messages, list) or not messages:
    raise RequestError("'messages' must be a non-empty array of {role, content} objects", param='messages',
                       code='invalid_value' if isinstance(messages, list) else 'invalid_type')
  out = []
  for i, m in enumerate(messages):
    where = f'messages[{i}]'
    if not isinstance(m, Mapping):
      raise RequestError(f'{where} must be an object with role and content', param=where, code='invalid_type')
    role = m.get('role')
    if role not in ROLES:
      raise RequestError(f'{where}.role {role!r} is not supported; expected one of {sorted(ROLES)}',
                         param=f'{where}.role', code='invalid_value')
    if 'content' not in m:
      raise RequestError(f'{where}.content is required', param=f'{where}.content', code='missing_required_parameter')
    out.append({'role': ROLES[role], 'content': _content_text(m['content'], f'{where}.content')})
  return out


def _number(body, name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
  value = body.get(name)
  if value is None:
    return default
  if not _is_number(value) or value > hi or value < lo or (lo_open and value == lo):
    bound = f'({lo}, {hi}]' if lo_open else f'[{lo}, {hi}]'
    raise RequestError(f"'{name}' must be a number in {bound}; got {value!r}", param=name, code='invalid_value')
  return float(value)


def _positive_int(body, name: str, limit: int | None = None) -> int | None:
  value = body.get(name)
  if value is None:
    return None
  if not _is_int(value) or value < 1:
    raise RequestError(f"'{name}' must be a positive integer; got {value!r}", param=name, code='invalid_value')
  if limit is not None and value > limit:
    raise RequestError(f"'{name}' {value} exceeds this server's limit of {limit}", param=name, code='invalid_value')
  return value


def _refuse_unsupported(body: Mapping) -> None:
  for name in _UNSUPPORTED:
    value = body.get(name)
    if value not in (None, False, [], '', {}):
      raise RequestError(f"'{name}' is not supported by this server", param=name, code='unsupported_parameter')
  fmt = body.get('response_format')
  if fmt not in (None, {'type': 'text'}):
    raise RequestError("'response_format' other than text is not supported", param='response_format',
                       code='unsupported_parameter')


def _no_constant(name: str):
  raise ValueError(f'{name} is not a JSON number')  # Python's json accepts NaN/Infinity; JSON does not


def _lone_surrogate_at(body) -> str | None:
  """The first string (key or value) that cannot be UTF-8 (a lone surrogate from a \\ud800 escape),
  found without recursion: the tokenizer would fail on it mid-request."""
  stack = [body]
  while stack:
    node = stack.pop()
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
      for text in (key, value):
        if isinstance(text, str):
          try:
            text.encode('utf-8')
          except UnicodeEncodeError:
            return text[:40]
      if isinstance(value, (dict, list)):
        stack.append(value)
  return None


def parse_json(raw: bytes) -> dict[str, Any]:
  try:
    body = json.loads(raw, parse_constant=_no_constant)
  except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
    raise RequestError(f'the request body is not valid JSON: {e}', code='invalid_json') from None
  except RecursionError:
    raise RequestError('the request body is nested too deeply', code='invalid_json') from None
  if not isinstance(body, dict):
    raise RequestError('the request body must be a JSON object', code='invalid_json')
  bad = _lone_surrogate_at(body)
  if bad is not None:
    raise RequestError(f'the request body holds a string that is not valid Unicode (a lone surrogate): {bad!r}',
                       code='invalid_json')
  return body


def parse_chat_request(body: Mapping[str, Any], model_name: str, *, max_n: int,
                       max_tokens_limit: int) -> ChatRequest:
  """Validates `body`; raises RequestError naming the first bad field. Any request for a model
  other than `model_name` is refused (404 model_not_found), so a client never gets another
  model's output by mistake; an absent model means this one."""
  model = body.get('model', model_name)
  if model != model_name:
    raise RequestError(f'The model {model!r} does not exist; this server serves {model_name!r}', param='model',
                       code='model_not_found', status=404)
  messages = parse_messages(body.get('messages'))
  _refuse_unsupported(body)
  stream = body.get('stream') or False
  if not isinstance(stream, bool):
    raise RequestError(f"'stream' must be a boolean; got {stream!r}", param='stream', code='invalid_type')
  options = body.get('stream_options') or {}
  if not isinstance(options, Mapping):
    raise RequestError("'stream_options' must be an object", param='stream_options', code='invalid_type')
  seed = body.get('seed')
  if seed is not None and not _is_int(seed):
    raise RequestError(f"'seed' must be an integer; got {seed!r}", param='seed', code='invalid_type')
  # max_completion_tokens is the current name, max_tokens the deprecated one.
  max_tokens = _positive_int(body, 'max_completion_tokens', max_tokens_limit)
  if max_tokens is None:
    max_tokens = _positive_int(body, 'max_tokens', max_tokens_limit)
  return ChatRequest(model=model_name, messages=messages, n=_positive_int(body, 'n', max_n) or 1,
                     temperature=_number(body, 'temperature', 1.0, 0.0, 2.0),
                     top_p=_number(body, 'top_p', 1.0, 0.0, 1.0, lo_open=True), max_tokens=max_tokens,
                     seed=None if seed is None else int(seed) % (1 << 32), stream=stream,
                     include_usage=bool(options.get('include_usage', False)))


def context_length_error(prompt_tokens: int, max_tokens: int, max_context: int) -> RequestError:
  return RequestError(f"This model's maximum context length is {max_context} tokens. However, you requested "
                      f'{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the '
                      'completion). Please reduce the length of the messages or completion.',
                      param='messages', code='context_length_exceeded')


# -- responses ------------------------------------------------------------------------------------

def completion_id() -> str:
  return f'chatcmpl-{uuid.uuid4().hex}'


def usage(prompt_tokens: int, choices: Sequence[Choice]) -> dict[str, int]:
  """The prompt counts once however many choices share it (as OpenAI bills n > 1)."""
  completion = sum(c.completion_tokens for c in choices)
  return {'prompt_tokens': prompt_tokens, 'completion_tokens': completion, 'total_tokens': prompt_tokens + completion}


def _message(choice: Choice) -> dict[str, Any]:
  return {'role': 'assistant', 'content': choice.content, 'reasoning_content': choice.reasoning}


def completion_body(request_id: str, model: str, prompt_tokens: int, choices: Sequence[Choice],
                    created: int | None = None) -> dict[str, Any]:
  """A `chat.completion`; `well_formed` on each choice is this server's extension (the CoT and
  answer parsed cleanly), which clients that filter traces need and others ignore."""
  return {'id': request_id, 'object': 'chat.completion', 'created': created or int(time.time()), 'model': model,
          'choices': [{'index': i, 'message': _message(c), 'finish_reason': c.finish_reason,
                       'logprobs': None, 'well_formed': c.well_formed} for i, c in enumerate(choices)],
          'usage': usage(prompt_tokens, choices)}


def text_pieces(text: str) -> list[str]:
  """`text` as word-sized pieces whose concatenation is `text` (leading whitespace kept)."""
  return re.findall(r'\S+\s*|\s+', text)


def stream_chunks(request_id: str, model: str, prompt_tokens: int, choices: Sequence[Choice],
                  include_usage: bool = False, created: int | None = None) -> Iterator[dict[str, Any]]:
  """`chat.completion.chunk`s of finished choices: per choice a role delta, the reasoning
  pieces, the answer pieces, then a final delta with the finish reason; with `include_usage`
  one last chunk with no choices and the usage, as OpenAI sends it."""
  created = created or int(time.time())

  def chunk(index: int, delta: dict, finish_reason: str | None = None, **extra) -> dict[str, Any]:
    return {'id': request_id, 'object': 'chat.completion.chunk', 'created': created, 'model': model,
            'choices': [{'index': index, 'delta': delta, 'finish_reason': finish_reason, 'logprobs': None, **extra}]}

  for i, c in enumerate(choices):
    yield chunk(i, {'role': 'assistant', 'content': ''})
    for piece in text_pieces(c.reasoning or ''):
      yield chunk(i, {'reasoning_content': piece})
    for piece in text_pieces(c.content):
      yield chunk(i, {'content': piece})
    yield chunk(i, {}, c.finish_reason, well_formed=c.well_formed)
  if include_usage:
    yield {'id': request_id, 'object': 'chat.completion.chunk', 'created': created, 'model': model, 'choices': [],
           'usage': usage(prompt_tokens, choices)}


def models_body(model: str, created: int) -> dict[str, Any]:
  return {'object': 'list', 'data': [model_body(model, created)]}


def model_body(model: str, created: int) -> dict[str, Any]:
  return {'id': model, 'object': 'model', 'created': created, 'owned_by': 'deliberative'}
