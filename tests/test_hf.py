"""Hugging Face parity: import, export, generation, and the errors bad directories give."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from deliberative.weights import checkpoints, source
from deliberative.weights import hf
from deliberative.model import loading
from tests.hf_fixtures import tiny_hf_model

CASES = [('llama', False, {}), ('qwen2', True, {}),
         ('llama', True, dict(rope_parameters=dict(rope_type='llama3', rope_theta=500000.0, factor=8.0,
                                                   low_freq_factor=1.0, high_freq_factor=4.0,
                                                   original_max_position_embeddings=32)))]


def _torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


def _our_logits(model, ids):
  logits, _ = model(jnp.asarray(ids))
  return np.asarray(logits)


def _greedy_ours(model, ids, n):
  # Full (causal) forward over a fixed-size buffer each step: one compilation, no cache involved.
  forward = jax.jit(lambda toks: model(toks)[0])
  buf = np.zeros((1, len(ids) + n), np.int32)
  buf[0, :len(ids)] = ids
  for t in range(len(ids), len(ids) + n):
    buf[0, t] = int(np.asarray(forward(jnp.asarray(buf)))[0, t - 1].argmax())
  return buf[0].tolist()


@pytest.mark.slow
@pytest.mark.parametrize('arch,tie,extra', CASES, ids=['llama-untied', 'qwen2-tied', 'llama3-rope-tied'])
def test_import_export_roundtrip(tmp_path, arch, tie, extra):
  src = str(tmp_path / 'src')
  ref = tiny_hf_model(arch, src, tie=tie, seed=1, **extra)
  ids = np.random.default_rng(0).integers(0, 96, size=(2, 24))

  cfg, model, _ = source.load(src)
  assert cfg.tie_embeddings == tie and cfg.qkv_bias == (arch == 'qwen2')
  np.testing.assert_allclose(_our_logits(model, ids), _torch_logits(ref, ids), atol=1e-4, rtol=0)

  out = str(tmp_path / 'exported')
  hf.export(loading.params_of(model), cfg, out, max_shard_bytes=40_000)  # forces several shards + index
  assert os.path.exists(os.path.join(out, 'model.safetensors.index.json'))
  back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  np.testing.assert_allclose(_torch_logits(back, ids), _torch_logits(ref, ids), atol=1e-4, rtol=0)

  prompt = ids[0, :5].tolist()
  with torch.no_grad():
    theirs = back.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, min_new_tokens=20,
                           eos_token_id=None, pad_token_id=0)[0].tolist()
  assert _greedy_ours(model, prompt, 20) == theirs


def test_import_tool_writes_orbax_and_export_tool_reads_it(tmp_path, capsys):
  import tools.export_hf
  import tools.import_hf
  src = str(tmp_path / 'src')
  ref = tiny_hf_model('qwen2', src, tie=False, seed=2)
  ckpt = str(tmp_path / 'ckpt')
  assert tools.import_hf.main(['--hf_dir', src, '--out', ckpt]) == 0
  assert checkpoints.latest_step(ckpt) == 0
  out = str(tmp_path / 'hf_out')
  assert tools.export_hf.main(['--checkpoint', ckpt, '--out', out]) == 0
  assert os.path.exists(os.path.join(out, 'model.safetensors'))  # small: one file, no index
  back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  ids = np.arange(30).reshape(2, 15)
  np.testing.assert_allclose(_torch_logits(back, ids), _torch_logits(ref, ids), atol=1e-5, rtol=0)
  # Exporting over an existing directory is refused unless asked for.
  with pytest.raises(SystemExit):
    tools.import_hf.main(['--hf_dir', src, '--out', ckpt])
  assert tools.export_hf.main(['--checkpoint', ckpt, '--out', out]) == 1  # exists: one line, no traceback
  assert 'exists' in capsys.readouterr().err


def _edit_config(d, **changes):
  path = os.path.join(d, 'config.json')
  with open(path) as f:
    raw = json.load(f)
  raw.update(changes)
  with open(path, 'w') as f:
    json.dump(raw, f)


@pytest.fixture
def llama_dir(tmp_path):
  d = str(tmp_path / 'llama')
  tiny_hf_model('llama', d, tie=False)
  return d


def test_unsupported_architecture_names_itself_and_the_supported(llama_dir):
  _edit_config(llama_dir, architectures=['MistralForCausalLM'])
  with pytest.raises(hf.HFFormatError, match=r"MistralForCausalLM.*supported: LlamaForCausalLM, Qwen2ForCausalLM"):
    source.load(llama_dir)


def _rewrite_tensors(d, edit):
  from deliberative.weights import safetensors_io
  path = os.path.join(d, 'model.safetensors')
  st = safetensors_io.SafetensorsFile(path)
  tensors = {k: np.array(st.read(k)) for k in st.keys()}
  del st
  edit(tensors)
  safetensors_io.write(path, tensors)


def test_a_tied_model_whose_stored_head_differs_is_refused(tmp_path):
  d = str(tmp_path / 'tied')
  tiny_hf_model('llama', d, tie=True)
  same = lambda t: t.__setitem__('lm_head.weight', t['model.embed_tokens.weight'].copy())  # noqa: E731
  _rewrite_tensors(d, same)
  source.load(d)  # a stored copy of the embeddings is the tied head: accepted
  _rewrite_tensors(d, lambda t: t.__setitem__('lm_head.weight', t['lm_head.weight'] + 0.5))
  with pytest.raises(hf.HFFormatError, match=r'lm_head.weight differs from model.embed_tokens.weight .*'
                                             r'tie_word_embeddings=true'):
    source.load(d)


def test_missing_tensor_is_named_with_its_shape(llama_dir):
  _rewrite_tensors(llama_dir, lambda t: t.pop('model.layers.1.mlp.up_proj.weight'))
  with pytest.raises(hf.HFFormatError, match=r'missing.*model\.layers\.1\.mlp\.up_proj\.weight \[112, 64\]'):
    source.load(llama_dir)


def test_extra_tensor_is_named(llama_dir):
  _rewrite_tensors(llama_dir, lambda t: t.update({'model.layers.0.self_attn.o_proj.bias': np.zeros(64, np.float32)}))
  with pytest.raises(hf.HFFormatError, match=r'unexpected.*o_proj\.bias'):
    source.load(llama_dir)


def test_wrong_shape_is_named_with_expected_shape(llama_dir):
  def edit(t):
    t['model.layers.0.self_attn.k_proj.weight'] = np.zeros((64, 64), np.float32)
  _rewrite_tensors(llama_dir, edit)
  with pytest.raises(hf.HFFormatError, match=r'k_proj\.weight has shape \[64, 64\], expected \[32, 64\]'):
    source.load(llama_dir)


def test_failed_export_leaves_nothing(tmp_path, llama_dir):
  cfg, model, _ = source.load(llama_dir)
  out = tmp_path / 'never'

  def boom(_):
    raise RuntimeError('disk full')
  with pytest.raises(RuntimeError, match='disk full'):
    hf.export(loading.params_of(model), cfg, str(out), write_extra=boom)
  assert not out.exists()
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.export-')] == []


def _truncate(path, nbytes):
  with open(path, 'r+b') as f:
    f.truncate(nbytes)


def test_truncated_safetensors_names_file_tensor_byte_range_and_size(tmp_path):
  from deliberative.weights import safetensors_io
  path = str(tmp_path / 'part.safetensors')
  safetensors_io.write(path, [('a', np.ones((4, 4), np.float32)), ('b.weight', np.ones((8, 16), np.float32)),
                              ('c', np.ones(3, np.float32))])
  data_start = os.path.getsize(path) - (64 + 512 + 12)
  _truncate(path, data_start + 64 + 100)  # cut inside b.weight
  with pytest.raises(ValueError) as e:
    safetensors_io.SafetensorsFile(path)
  message = str(e.value)
  assert message.startswith(f'{path}: truncated: tensor b.weight needs bytes [64, 576) of the data section')
  assert f'(file bytes [{data_start + 64}, {data_start + 576}))' in message
  assert f'the file has {data_start + 164} bytes' in message and '1 more tensor(s)' in message

  _truncate(path, 20)  # cut inside the JSON header
  header_says = rf'{re.escape(path)}: truncated .*header claims {data_start - 8} bytes.*has 20 bytes'
  with pytest.raises(ValueError, match=header_says):
    safetensors_io.SafetensorsFile(path)


def test_corrupt_safetensors_offsets_are_named(tmp_path):
  from deliberative.weights import safetensors_io
  path = str(tmp_path / 'bad.safetensors')
  header = json.dumps({'w': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 20]}}).encode()
  with open(path, 'wb') as f:
    f.write(len(header).to_bytes(8, 'little') + header + bytes(24))
  with pytest.raises(ValueError, match=r'bad\.safetensors: corrupt .*tensor w: data_offsets \[0, 20\) hold 20 '
                                       r'bytes but F32 x shape \[2, 3\] needs 24'):
    safetensors_io.SafetensorsFile(path)


def test_truncated_hf_dir_fails_on_load_and_import_naming_the_file(tmp_path, llama_dir):
  import tools.import_hf
  path = os.path.join(llama_dir, 'model.safetensors')
  _truncate(path, os.path.getsize(path) - 1000)
  pattern = rf'{re.escape(path)}: truncated: tensor \S+ needs bytes \[\d+, \d+\) of the data section .* has \d+ bytes'
  with pytest.raises(ValueError, match=pattern):
    source.load(llama_dir)
  with pytest.raises(ValueError, match=pattern):
    tools.import_hf.main(['--hf_dir', llama_dir, '--out', str(tmp_path / 'ckpt')])


def test_export_extras_must_be_declared(tmp_path, llama_dir):
  cfg, model, _ = source.load(llama_dir)
  out = tmp_path / 'out'

  def notes(d):
    with open(os.path.join(d, 'notes.txt'), 'w') as f:
      f.write('x')
  # Undeclared, a later --overwrite could not tell this export from other work.
  with pytest.raises(ValueError, match=r"write_extra wrote \['notes.txt'\], which are not in extra_files"):
    hf.export(loading.params_of(model), cfg, str(out), write_extra=notes)
  assert not out.exists()
  hf.export(loading.params_of(model), cfg, str(out), write_extra=notes, extra_files=('notes.txt',))
  hf.export(loading.params_of(model), cfg, str(out), write_extra=notes, extra_files=('notes.txt',), overwrite=True)
  with pytest.raises(FileExistsError, match=r'holds files an export does not write \(notes\.txt\)'):
    hf.export(loading.params_of(model), cfg, str(out), overwrite=True)
