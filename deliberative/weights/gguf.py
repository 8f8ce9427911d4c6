"""GGUF files (llama.cpp) -> our ModelConfig, parameters, and a Hugging Face tokenizer.

A GGUF holds one model: metadata (hyperparameters, vocabulary, merges, chat template) and
tensors in ggml's layouts, most of them quantized. Each tensor is dequantized to float32,
turned back into the Hugging Face tensor llama.cpp's converter made it from, and placed with
hf.py's per-tensor converters: one tensor at a time, so an import never holds a second copy
of the model. Only the file's header is read before every name, shape and type is checked.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
from typing import Any, Mapping

import gguf
import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from deliberative.common import io as atomic
from deliberative.tokenizer import escape
from deliberative.tokenizer.hf import MODEL_TEMPLATE_KEY
from deliberative.weights import hf
from deliberative.model import loading
from deliberative.model.config import ModelConfig, RopeScaling
from deliberative.model.layers import rope_inv_freq

SUPPORTED_ARCHITECTURES = ('llama', 'qwen2')
_Q = gguf.GGMLQuantizationType
# The types llama.cpp writes for dense Llama/Qwen2 weights that gguf-py dequantizes in numpy;
# the i-quants, ternary and FP4 types are not tried here and are refused by name.
SUPPORTED_TYPES = tuple(_Q[n] for n in ('F32', 'F16', 'BF16', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0',
                                        'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'))
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
_REQUIRED = object()
_GGUF_VERSION = importlib.metadata.version('gguf')

# GGUF tensor name -> Hugging Face name (llama.cpp's gguf-py/gguf/tensor_mapping.py, read backwards).
_GLOBAL_NAMES = {'token_embd.weight': 'model.embed_tokens.weight', 'output_norm.weight': 'model.norm.weight',
                 'output.weight': 'lm_head.weight'}
_BLOCK_NAMES = {
    'attn_norm.weight': 'input_layernorm.weight', 'ffn_norm.weight': 'post_attention_layernorm.weight',
    'attn_q.weight': 'self_attn.q_proj.weight', 'attn_k.weight': 'self_attn.k_proj.weight',
    'attn_v.weight': 'self_attn.v_proj.weight', 'attn_output.weight': 'self_attn.o_proj.weight',
    'attn_q.bias': 'self_attn.q_proj.bias', 'attn_k.bias': 'self_attn.k_proj.bias',
    'attn_v.bias': 'self_attn.v_proj.bias', 'ffn_gate.weight': 'mlp.gate_proj.weight',
    'ffn_up.weight': 'mlp.up_proj.weight', 'ffn_down.weight': 'mlp.down_proj.weight',
}
_ROPE_FREQS = 'rope_freqs.weight'  # Llama 3.1+ frequency factors: read into the config, not a parameter


class GGUFFormatError(ValueError):
  pass


class _UnknownType(Exception):
  pass


class _Truncated(Exception):
  pass


class _Reader(gguf.GGUFReader):
  def _build_tensors(self, start_offs, fields):
    # gguf-py fails on a type id it does not know naming only the id; name the tensor too.
    # (field.parts of a tensor-info field: name length, name, n_dims, dims, type id, offset.)
    # A file cut short fails there with "cannot reshape array": name the first tensor whose bytes are
    # missing instead (ggml sizes: elements / block size * bytes per block).
    for field in fields:
      _, name, _, dims, type_id, offset = field.parts
      label = f'{bytes(name).decode("utf-8", "replace")} {[int(d) for d in dims]}'
      if int(type_id[0]) not in _Q._value2member_map_:
        raise _UnknownType(f'tensor {label} has tensor type id {int(type_id[0])}, which gguf {_GGUF_VERSION} '
                           'does not know')
      block, block_bytes = gguf.GGML_QUANT_SIZES[_Q(int(type_id[0]))]
      end = int(start_offs) + int(offset[0]) + int(np.prod(dims, dtype=np.int64)) // block * block_bytes
      if end > len(self.data):
        raise _Truncated(f'truncated: tensor {label} needs bytes up to {end:,}, the file ends at '
                         f'{len(self.data):,}; download or convert it again')
    super()._build_tensors(start_offs, fields)


class GGUFFile:
  """An opened GGUF: metadata lookups and tensors by name, errors naming the file."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.isfile(path):
      raise GGUFFormatError(f'{path}: not found (expected a .gguf file)')
    try:
      self.reader = _Reader(path)  # memory-mapped: tensor data is read when used
    except _UnknownType as e:
      raise GGUFFormatError(f'{path}: {e}; supported: {", ".join(q.name for q in SUPPORTED_TYPES)}') from None
    except _Truncated as e:
      raise GGUFFormatError(f'{path}: {e}') from None
    except (ValueError, IndexError, OverflowError) as e:  # bad magic, truncated header or data
      raise GGUFFormatError(f'{path}: not a readable GGUF file ({os.path.getsize(path):,} bytes): {e}') from e
    self.tensors = {t.name: t for t in self.reader.tensors}
    self.architecture = self.get('general.architecture')

  def get(self, key: str, default: Any = _REQUIRED) -> Any:
    field = self.reader.fields.get(key)
    if field is None:
      if default is _REQUIRED:
        raise GGUFFormatError(f'{self.path}: metadata key {key} is missing')
      return default
    return field.contents()

  def get_float(self, key: str, default: Any = _REQUIRED) -> float:
    # Stored as float32: the shortest decimal that float32 reads back (1e-05, not 9.99999974e-06).
    return float(str(np.float32(self.get(key, default))))

  def get_int(self, key: str, default: Any = _REQUIRED) -> int:
    value = self.get(key, default)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
      raise GGUFFormatError(f'{self.path}: metadata {key}={value!r}; expected one integer '
                            f'(per-layer values are not supported)')
    return int(value)

  def shape(self, name: str) -> tuple[int, ...]:
    """A tensor's shape in numpy (= Hugging Face) order; ggml lists dimensions innermost first."""
    return tuple(int(n) for n in reversed(self.tensors[name].shape))


def read_config(f: GGUFFile, **overrides) -> ModelConfig:
  """Our ModelConfig from the file's `{arch}.*` metadata; tied embeddings when output.weight is absent."""
  arch = f.architecture
  if arch not in SUPPORTED_ARCHITECTURES:
    raise GGUFFormatError(f'{f.path}: unsupported general.architecture {arch!r}; '
                          f'supported: {", ".join(SUPPORTED_ARCHITECTURES)}')
  key = lambda k: f'{arch}.{k}'  # noqa: E731
  if f.get_int(key('expert_count'), 0) > 0:
    raise GGUFFormatError(f'{f.path}: {key("expert_count")}={f.get(key("expert_count"))}: mixture-of-experts '
                          f'models are not supported')
  d_model, n_heads = f.get_int(key('embedding_length')), f.get_int(key('attention.head_count'))
  n_kv_heads = f.get_int(key('attention.head_count_kv'), n_heads)
  head_dim = f.get_int(key('attention.key_length'), d_model // n_heads)
  for k in ('attention.value_length', 'rope.dimension_count'):  # partial rotary / MLA are other models
    if f.get_int(key(k), head_dim) != head_dim:
      raise GGUFFormatError(f'{f.path}: {key(k)}={f.get(key(k))} differs from the head size {head_dim}; '
                            f'not supported')
  theta = f.get_float(key('rope.freq_base'), 10_000.0)
  if 'token_embd.weight' not in f.tensors:
    raise GGUFFormatError(f'{f.path}: missing tensor token_embd.weight (the embedding table)')
  tokens = f.reader.fields.get('tokenizer.ggml.tokens')
  vocab_size = len(tokens.data) if tokens is not None else f.shape('token_embd.weight')[0]
  fields = dict(
      vocab_size=vocab_size, d_model=d_model, n_layers=f.get_int(key('block_count')), n_heads=n_heads,
      n_kv_heads=n_kv_heads, ffn_dim=f.get_int(key('feed_forward_length')), head_dim=head_dim, rope_theta=theta,
      rope_scaling=_rope_scaling(f, key, head_dim, theta),
      norm_eps=f.get_float(key('attention.layer_norm_rms_epsilon')), qkv_bias=arch == 'qwen2',
      tie_embeddings='output.weight' not in f.tensors, max_seq_len=f.get_int(key('context_length'), 2048))
  fields.update(overrides)
  return ModelConfig(**fields)


def _rope_scaling(f: GGUFFile, key, head_dim: int, theta: float) -> RopeScaling | None:
  kind = f.get(key('rope.scaling.type'), 'none')
  if kind != 'none':
    raise GGUFFormatError(f'{f.path}: {key("rope.scaling.type")}={kind!r} is not supported; supported: none, '
                          f'and Llama 3 scaling stored as {_ROPE_FREQS}')
  if _ROPE_FREQS not in f.tensors:
    return None
  factors = _dequantize(f, _ROPE_FREQS).astype(np.float64).reshape(-1)
  original = f.get_int(key('rope.scaling.original_context_length'), 8192)
  return llama3_scaling_from_factors(factors, theta, head_dim, original, where=f'{f.path}: {_ROPE_FREQS}')


def llama3_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int, original: int,
                                where: str) -> RopeScaling | None:
  """Recovers Llama 3 rope scaling from llama.cpp's per-frequency divisors.

  llama.cpp stores `inv_freq / scaled_inv_freq` instead of (factor, low, high, original). Only
  the ratios of original / low / high show in the divisors, so `original` is taken as given and
  low/high fitted from the band between the fixed ends, then checked against every divisor.
  """
  if factors.shape != (head_dim // 2,):
    raise GGUFFormatError(f'{where}: {factors.size} values, expected head_dim/2 = {head_dim // 2}')
  factor = float(factors.max())
  if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
    return None
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  band = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
  if band.sum() < 2:
    raise GGUFFormatError(f'{where}: only {int(band.sum())} frequencies between 1 and the factor {factor:g}; '
                          f'Llama 3 scaling cannot be recovered from them')
  # Between the ends llama.cpp stores 1 / ((1 - s) / factor + s), s = (original / wavelen - low) / (high - low).
  smooth = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)
  slope, intercept = np.polyfit(original * inv_freq[band] / (2 * math.pi), smooth, 1)
  low = -intercept / slope
  scaling = RopeScaling(round(factor, 4), round(low, 4), round(low + 1 / slope, 4), original)
  ours = np.asarray(rope_inv_freq(head_dim, theta, scaling), np.float64)
  err = float(np.max(np.abs(inv_freq / ours / factors - 1)))
  if err > 1e-4:
    raise GGUFFormatError(f'{where}: not Llama 3 rope scaling: the best fit {scaling} misses a stored divisor '
                          f'by {err:.2g} (relative)')
  return scaling


def _gguf_names(cfg: ModelConfig) -> dict[str, str]:
  """GGUF name -> HF name for every tensor this config needs."""
  out = {g: h for g, h in _GLOBAL_NAMES.items() if not (cfg.tie_embeddings and g == 'output.weight')}
  for i in range(cfg.n_layers):
    for g, h in _BLOCK_NAMES.items():
      if cfg.qkv_bias or not g.endswith('.bias'):
        out[f'blk.{i}.{g}'] = f'model.layers.{i}.{h}'
  return out


def _dequantize(f: GGUFFile, name: str) -> np.ndarray:
  t = f.tensors[name]
  if t.tensor_type not in SUPPORTED_TYPES:
    raise GGUFFormatError(_type_error(f, [t]))
  values = gguf.quants.dequantize(t.data, t.tensor_type)
  return np.asarray(values, np.float32).reshape(f.shape(name))


def _type_error(f: GGUFFile, bad) -> str:
  shown = ', '.join(f'{t.name} ({t.tensor_type.name})' for t in bad[:5])
  more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
  return (f'{f.path}: unsupported tensor type(s): {shown}{more}; supported: '
          f'{", ".join(q.name for q in SUPPORTED_TYPES)}')


def _undo_rope_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
  # llama.cpp's converter reorders each q/k head's rows from Hugging Face's rotate-half layout
  # (pairs i, i + d/2) to ggml's interleaved one (pairs 2i, 2i + 1); this is its inverse.
  rows, cols = w.shape
  return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _describe(f: GGUFFile, cfg: ModelConfig) -> str:
  return (f'{f.architecture}: block_count={cfg.n_layers} embedding_length={cfg.d_model} '
          f'feed_forward_length={cfg.ffn_dim} head_count={cfg.n_heads} head_count_kv={cfg.n_kv_heads} '
          f'head_dim={cfg.head_dim_} vocab={cfg.vocab_size}')


def _listing(items: list[str]) -> str:
  return ', '.join(items[:10]) + (f' and {len(items) - 10} more' if len(items) > 10 else '')


def check_tensors(f: GGUFFile, cfg: ModelConfig) -> dict[str, str]:
  """Every name, shape and type, from the header alone: GGUF name -> HF name, or an error naming
  each problem. Shapes are written as ggml (and gguf-dump) list them: innermost dimension first."""
  names = _gguf_names(cfg)
  specs = hf._tensor_specs(cfg)
  ggml = lambda shape: list(reversed(shape))  # noqa: E731
  missing = [f'{g} {ggml(hf._hf_shape(specs[h]))}' for g, h in names.items() if g not in f.tensors]
  if missing:
    raise GGUFFormatError(f'{f.path}: missing tensor(s) (expected shape, ggml order) for {_describe(f, cfg)}: '
                          f'{_listing(missing)}')
  extra = [f'{n} {ggml(f.shape(n))}' for n in f.tensors if n not in names and n != _ROPE_FREQS]
  if extra:
    raise GGUFFormatError(f'{f.path}: unexpected tensor(s) for {_describe(f, cfg)}: {_listing(extra)}')
  wrong = [f'{g} is {ggml(f.shape(g))}, expected {ggml(hf._hf_shape(specs[h]))}' for g, h in names.items()
           if f.shape(g) != hf._hf_shape(specs[h])]
  if wrong:
    raise GGUFFormatError(f'{f.path}: tensor shape(s) (ggml order) do not match the metadata ({_describe(f, cfg)}): '
                          f'{_listing(wrong)}')
  bad = [f.tensors[g] for g in names if f.tensors[g].tensor_type not in SUPPORTED_TYPES]
  if bad:
    raise GGUFFormatError(_type_error(f, bad))
  return names


def load_params(f: GGUFFile, cfg: ModelConfig, abstract_params: Mapping) -> dict:
  """Dequantized parameters shaped (and sharded) like `abstract_params`, one tensor at a time."""
  names = check_tensors(f, cfg)
  specs = hf._tensor_specs(cfg)
  out = hf.ParamTree(abstract_params)
  for name in f.tensors:  # file order: the memory map is read front to back
    if name not in names:
      continue
    value = _dequantize(f, name)
    if f.architecture == 'llama' and name.endswith(('.attn_q.weight', '.attn_k.weight')):
      value = _undo_rope_permute(value, cfg.n_heads if '.attn_q.' in name else cfg.n_kv_heads)
    our_path, _, to_ours, _ = specs[names[name]]
    out.put(our_path, to_ours(value))
  return out.tree


def tensor_types(f: GGUFFile) -> dict[str, int]:
  counts: dict[str, int] = {}
  for t in f.reader.tensors:
    counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
  return counts


# --- tokenizer -------------------------------------------------------------------------------

# How llama.cpp (src/llama-vocab.cpp) splits text before BPE, by `tokenizer.ggml.pre`, written
# the way the models' own tokenizer.json files write it; then whether a piece that is itself a
# token skips BPE (ignore_merges) and whether BOS is added when the file does not say: llama.cpp
# sets both for the Llama 3 family only.
_LLAMA3_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                 r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r'\p{N}{1,3}', r'\p{N}')


def _gpt2():
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _split_then_bytes(regex: str):
  return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior='isolated'),
                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _digits_then_gpt2():
  # SmolLM's (and StarCoder's) tokenizer.json; llama.cpp splits on \p{N}, which Rust's
  # is_numeric (Digits) matches too, but for 13 code points added in Unicode 16.
  return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()])


_PRE_TOKENIZERS = {
    'gpt-2': (_gpt2, False, False),
    'smollm': (_digits_then_gpt2, False, False),
    'llama-bpe': (lambda: _split_then_bytes(_LLAMA3_SPLIT), True, True),
    'llama3': (lambda: _split_then_bytes(_LLAMA3_SPLIT), True, True),
    'llama-v3': (lambda: _split_then_bytes(_LLAMA3_SPLIT), True, True),
    'qwen2': (lambda: _split_then_bytes(_QWEN2_SPLIT), False, False),
    'deepseek-r1-qwen': (lambda: _split_then_bytes(_QWEN2_SPLIT), False, False),
}
_SPECIAL_IDS = {'bos_token': 'bos_token_id', 'eos_token': 'eos_token_id', 'unk_token': 'unknown_token_id',
                'pad_token': 'padding_token_id'}


def build_tokenizer(f: GGUFFile) -> tuple[Tokenizer, dict[str, Any]]:
  """A `tokenizers.Tokenizer` equal to llama.cpp's for a byte-level BPE vocabulary, and what
  tokenizer_config.json needs (special tokens, add_bos/add_eos, chat template)."""
  kind = f.get('tokenizer.ggml.model', None)
  if kind != 'gpt2':
    raise GGUFFormatError(f'{f.path}: tokenizer.ggml.model={kind!r} is not supported; supported: gpt2 '
                          f'(byte-level BPE, as in Llama 3, Qwen2 and SmolLM)')
  pre = f.get('tokenizer.ggml.pre', 'default')
  if pre not in _PRE_TOKENIZERS:
    raise GGUFFormatError(f'{f.path}: tokenizer.ggml.pre={pre!r} is not supported; supported: '
                          f'{", ".join(_PRE_TOKENIZERS)}')
  make_pre_tokenizer, ignore_merges, add_bos_default = _PRE_TOKENIZERS[pre]
  tokens = f.get('tokenizer.ggml.tokens')
  types = f.get('tokenizer.ggml.token_type', [int(gguf.TokenType.NORMAL)] * len(tokens))
  if len(types) != len(tokens):
    raise GGUFFormatError(f'{f.path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens')
  merges = []
  for i, merge in enumerate(f.get('tokenizer.ggml.merges')):
    pair = merge.split(' ')
    if len(pair) != 2:
      raise GGUFFormatError(f'{f.path}: tokenizer.ggml.merges[{i}]={merge!r} is not two tokens and one space')
    merges.append(tuple(pair))
  # A spelling listed twice keeps its last id, as llama.cpp's token-to-id map does.
  vocab = {token: i for i, token in enumerate(tokens)}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
  tok.pre_tokenizer = make_pre_tokenizer()
  tok.decoder = decoders.ByteLevel()
  # Control and user-defined tokens are stored as raw text and matched whole in the input
  # before any splitting (llama.cpp matches control tokens only when asked: special=True).
  control, user = int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)
  added = {vocab[t]: t for t, ty in zip(tokens, types) if ty in (control, user) and t}
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                          for t, ty in zip(tokens, types) if ty == control and t])
  tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == user and t])
  moved = [f'{t!r} {i} -> {tok.token_to_id(t)}' for i, t in added.items() if tok.token_to_id(t) != i]
  if moved or tok.get_vocab_size() != len(vocab):
    raise GGUFFormatError(f'{f.path}: the tokenizer built from the vocabulary renumbered tokens '
                          f'({_listing(moved)}; {tok.get_vocab_size()} ids for {len(vocab)} spellings)')
  info: dict[str, Any] = {}
  for name, key in _SPECIAL_IDS.items():
    token_id = f.get(f'tokenizer.ggml.{key}', None)
    if token_id is not None:
      if not 0 <= token_id < len(tokens):
        raise GGUFFormatError(f'{f.path}: tokenizer.ggml.{key}={token_id} is outside the vocabulary '
                              f'of {len(tokens)} tokens')
      info[name] = tokens[token_id]
  info['add_bos_token'] = bool(f.get('tokenizer.ggml.add_bos_token', add_bos_default))
  info['add_eos_token'] = bool(f.get('tokenizer.ggml.add_eos_token', False))
  ends = [(info.get('bos_token'), info['add_bos_token']), (info.get('eos_token'), info['add_eos_token'])]
  if any(add and token is None for token, add in ends):
    raise GGUFFormatError(f'{f.path}: add_bos_token/add_eos_token is set but the token id is missing')
  if info['add_bos_token'] or info['add_eos_token']:
    bos = [info['bos_token']] if info['add_bos_token'] else []
    eos = [info['eos_token']] if info['add_eos_token'] else []
    tok.post_processor = processors.TemplateProcessing(
        single=[*bos, '$A', *eos], pair=[*bos, '$A', *eos, *bos, '$B:1', *eos],
        special_tokens=[(t, vocab[t]) for t in dict.fromkeys(bos + eos)])
  template = f.get('tokenizer.chat_template', None)
  if template is not None:
    info['chat_template'] = template
  return tok, info


def generation_config(f: GGUFFile) -> dict[str, Any]:
  """Token ids for generation_config.json: generation stops at eos and at llama.cpp's end-of-turn ids."""
  get = lambda key: f.get(f'tokenizer.ggml.{key}', None)  # noqa: E731
  stops = list(dict.fromkeys(i for i in (get('eos_token_id'), get('eot_token_id'), get('eom_token_id'))
                             if i is not None))
  out = {'bos_token_id': get('bos_token_id'), 'eos_token_id': stops[0] if len(stops) == 1 else stops or None,
         'pad_token_id': get('padding_token_id')}
  return {k: v for k, v in out.items() if v is not None}


def tokenizer_files(tok: Tokenizer, info: Mapping[str, Any], model_max_length: int) -> dict[str, str]:
  """File name -> text of tokenizer.json, tokenizer_config.json and special_tokens_map.json (from
  `build_tokenizer`): what `write_tokenizer_files` writes and `hf_tokenizer` reads."""
  special = {k: info[k] for k in _SPECIAL_IDS if k in info}
  config = {
      'tokenizer_class': 'PreTrainedTokenizerFast', **special,
      'add_bos_token': info['add_bos_token'], 'add_eos_token': info['add_eos_token'],
      'clean_up_tokenization_spaces': False,  # the ids are exact; HF's clean-up would alter decoded text
      'model_max_length': model_max_length,
  }
  tokenizer_json = tok.to_str(pretty=True)
  if 'chat_template' in info:
    # The file's template as our loader reads it, and behind the escape for transformers: a
    # control token spelled in a user's message renders as text (tokenizer/export.py).
    config[MODEL_TEMPLATE_KEY] = info['chat_template']
    config['chat_template'] = escape.safe_chat_template(tokenizer_json, info['chat_template'])
  dump = lambda obj: json.dumps(obj, indent=2, ensure_ascii=False) + '\n'  # noqa: E731
  return {'tokenizer.json': escape.escaped_tokenizer_json(tokenizer_json) + '\n',
          'tokenizer_config.json': dump(config), 'special_tokens_map.json': dump(special)}


def write_tokenizer_files(out_dir: str, tok: Tokenizer, info: Mapping[str, Any], model_max_length: int) -> None:
  """`tokenizer_files` into `out_dir`."""
  for name, text in tokenizer_files(tok, info, model_max_length).items():
    atomic.write_text(os.path.join(out_dir, name), text)


def hf_tokenizer(path: str):
  """The GGUF file's tokenizer as `HFTokenizer.load` reads it from the directory `write_hf_dir`
  makes, built from the file's header alone (no tensor is read): what a checkpoint imported from
  the file records and exports with."""
  from deliberative.tokenizer.hf import HFTokenizer
  f = GGUFFile(path)
  tok, info = build_tokenizer(f)
  files = tokenizer_files(tok, info, read_config(f).max_seq_len)
  return HFTokenizer(files['tokenizer.json'], json.loads(files['tokenizer_config.json']),
                     info.get('chat_template'), where=path)


def write_hf_dir(path: str, out_dir: str, *, dtype: str = 'float32', overwrite: bool = False,
                 params: Mapping | None = None) -> dict[str, Any]:
  """The GGUF file at `path` as a Hugging Face directory: weights, tokenizer.json built from its
  vocabulary, its chat template and end-of-sequence ids. Returns what the caller may report."""
  f = GGUFFile(path)
  cfg = read_config(f, param_dtype=dtype)
  check_tensors(f, cfg)  # every name, shape and type, before any slow work
  tok, info = build_tokenizer(f)
  hf.check_export_target(out_dir, overwrite=overwrite, extra_files=TOKENIZER_FILES)
  if params is None:
    params = load_params(f, cfg, loading.abstract_params(cfg))
  ids = generation_config(f)
  out = hf.export(params, cfg, out_dir, dtype=dtype, overwrite=overwrite, extra_files=TOKENIZER_FILES,
                  config_extra=ids, generation_config=ids,
                  write_extra=lambda d: write_tokenizer_files(d, tok, info, cfg.max_seq_len))
  return {'out': out, 'vocab_size': tok.get_vocab_size(), 'pre_tokenizer': f.get('tokenizer.ggml.pre', 'default'),
          'chat_template': 'chat_template' in info, 'eos_token_id': ids.get('eos_token_id')}
