"""Hugging Face interop: LlamaForCausalLM / Qwen2ForCausalLM directories <-> our parameters.

Tensors move one at a time (memory-mapped on read, one shard buffered on write), so a
conversion never holds a second full copy of the model in host memory. The exception is a
stacked target (model.scan_layers): a parameter's layers are gathered into one host buffer
before it is placed, so reading a layer-ordered file holds up to the blocks once on the host.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_dtypes
import numpy as np

from deliberative.model import layout
from deliberative.weights import safetensors_io
from deliberative.model.config import ModelConfig, RopeScaling

SUPPORTED_ARCHITECTURES = ('LlamaForCausalLM', 'Qwen2ForCausalLM')
_EXPORT_DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16, 'float16': np.float16}
_IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)  # buffers some older checkpoints saved
# What `export` itself writes; callers name the files their `write_extra` adds. `overwrite`
# replaces only a directory holding nothing else, so a mistyped --out cannot delete a run.
EXPORT_FILES = ('config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json')
_SHARD_FILE = re.compile(r'model-\d{5}-of-\d{5}\.safetensors')


class HFFormatError(ValueError):
  pass


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise HFFormatError(f'{path}: not found; a Hugging Face model directory needs config.json') from None
  except json.JSONDecodeError as e:
    raise HFFormatError(f'{path}: invalid JSON at line {e.lineno}: {e.msg}') from e


def is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, 'config.json')) and bool(glob.glob(os.path.join(path, '*.safetensors')))


def read_config(hf_dir: str, **overrides) -> ModelConfig:
  """Our ModelConfig from a Hugging Face config.json (legacy rope fields and v5 `rope_parameters`)."""
  path = os.path.join(hf_dir, 'config.json')
  raw = _load_json(path)
  archs = raw.get('architectures') or []
  if len(archs) != 1 or archs[0] not in SUPPORTED_ARCHITECTURES:
    raise HFFormatError(f'{path}: unsupported architecture {archs or raw.get("model_type")!r}; '
                        f'supported: {", ".join(SUPPORTED_ARCHITECTURES)}')
  arch = archs[0]
  if raw.get('hidden_act', 'silu') != 'silu':
    raise HFFormatError(f'{path}: hidden_act={raw["hidden_act"]!r}; only silu (SwiGLU) is supported')
  if arch == 'LlamaForCausalLM' and (raw.get('attention_bias') or raw.get('mlp_bias')):
    raise HFFormatError(f'{path}: attention_bias/mlp_bias=true is not supported for LlamaForCausalLM')
  if arch == 'Qwen2ForCausalLM' and raw.get('use_sliding_window'):
    raise HFFormatError(f'{path}: use_sliding_window=true is not supported')
  rope = dict(raw.get('rope_parameters') or raw.get('rope_scaling') or {})
  theta = rope.get('rope_theta', raw.get('rope_theta', 10_000.0))
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope_type == 'llama3':
    scaling = RopeScaling(float(rope['factor']), float(rope['low_freq_factor']), float(rope['high_freq_factor']),
                          int(rope['original_max_position_embeddings']))
  elif rope_type == 'default':
    scaling = None
  else:
    raise HFFormatError(f'{path}: rope type {rope_type!r} is not supported; supported: default, llama3')
  n_heads = raw['num_attention_heads']
  fields = dict(
      vocab_size=raw['vocab_size'], d_model=raw['hidden_size'], n_layers=raw['num_hidden_layers'],
      n_heads=n_heads, n_kv_heads=raw.get('num_key_value_heads') or n_heads, ffn_dim=raw['intermediate_size'],
      head_dim=raw.get('head_dim') or raw['hidden_size'] // n_heads, rope_theta=float(theta), rope_scaling=scaling,
      norm_eps=raw.get('rms_norm_eps', 1e-6), qkv_bias=arch == 'Qwen2ForCausalLM',
      tie_embeddings=bool(raw.get('tie_word_embeddings', False)),
      max_seq_len=raw.get('max_position_embeddings', 2048))
  fields.update(overrides)
  return ModelConfig(**fields)


def architecture(cfg: ModelConfig) -> str:
  return 'Qwen2ForCausalLM' if cfg.qkv_bias else 'LlamaForCausalLM'


def _tensor_specs(cfg: ModelConfig) -> dict[str, tuple[tuple, tuple, Callable, Callable]]:
  """HF name -> (our path, our shape, hf->ours, ours->hf). Both directions are pure reshapes/transposes.

  Paths and shapes are per layer (('blocks', i, ...)) in either layout; `ParamTree` and
  `layer_tensor` map them onto stacked blocks."""
  e, h, k, d, f, v = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim_, cfg.ffn_dim, cfg.vocab_size
  same = lambda x: x
  specs = {
      'model.embed_tokens.weight': (('embed',), (v, e), same, same),
      'model.norm.weight': (('final_norm', 'scale'), (e,), same, same),
  }
  if not cfg.tie_embeddings:
    specs['lm_head.weight'] = (('lm_head',), (e, v), lambda x: x.T, lambda x: x.T)

  def heads_in(n):  # [n*d, e] <-> [e, n, d]
    return (lambda x: x.T.reshape(e, n, d)), (lambda x: x.reshape(e, n * d).T)

  for i in range(cfg.n_layers):
    hf, ours = f'model.layers.{i}.', ('blocks', i)
    specs[hf + 'input_layernorm.weight'] = (ours + ('attn_norm', 'scale'), (e,), same, same)
    specs[hf + 'post_attention_layernorm.weight'] = (ours + ('mlp_norm', 'scale'), (e,), same, same)
    for name, n in (('q', h), ('k', k), ('v', k)):
      to_ours, to_hf = heads_in(n)
      specs[hf + f'self_attn.{name}_proj.weight'] = (ours + ('attn', name), (e, n, d), to_ours, to_hf)
      if cfg.qkv_bias:
        specs[hf + f'self_attn.{name}_proj.bias'] = (
            ours + ('attn', f'{name}_bias'), (n, d), (lambda x, n=n: x.reshape(n, d)), (lambda x: x.reshape(-1)))
    specs[hf + 'self_attn.o_proj.weight'] = (
        ours + ('attn', 'o'), (h, d, e), lambda x: x.T.reshape(h, d, e), lambda x: x.reshape(h * d, e).T)
    for name in ('gate', 'up'):
      specs[hf + f'mlp.{name}_proj.weight'] = (ours + ('mlp', name), (e, f), lambda x: x.T, lambda x: x.T)
    specs[hf + 'mlp.down_proj.weight'] = (ours + ('mlp', 'down'), (f, e), lambda x: x.T, lambda x: x.T)
  return specs


def _safetensors_files(hf_dir: str) -> list[str]:
  index = os.path.join(hf_dir, 'model.safetensors.index.json')
  if os.path.exists(index):
    names = sorted(set(_load_json(index)['weight_map'].values()))
    missing = [n for n in names if not os.path.exists(os.path.join(hf_dir, n))]
    if missing:
      raise HFFormatError(f'{index}: lists shard(s) that are not in {hf_dir}: {missing}')
    return [os.path.join(hf_dir, n) for n in names]
  files = sorted(glob.glob(os.path.join(hf_dir, '*.safetensors')))
  if not files:
    raise HFFormatError(f'{hf_dir}: no *.safetensors files (PyTorch .bin checkpoints are not supported)')
  return files


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def place(value, target) -> jax.Array:
  """A host tensor as a device array of `target`'s dtype, laid out as its sharding says (each
  device receives only its shard)."""
  host = np.asarray(value, dtype=target.dtype)
  sharding = getattr(target, 'sharding', None)
  if sharding is None:
    return jax.numpy.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


class ParamTree:
  """Host tensors, given by their per-layer path (`_tensor_specs`), placed into a tree shaped
  (and sharded) like `abstract`. For stacked blocks (model.scan_layers) each parameter's layers
  fill one host buffer, placed once, with its sharding, when the last layer arrives."""

  def __init__(self, abstract: Mapping):
    self.abstract = abstract
    self.tree = jax.tree.map(lambda x: None, abstract)
    self.stacked = layout.has_blocks(abstract) and layout.is_stacked(abstract)
    self._pending: dict[tuple, tuple[np.ndarray, set[int]]] = {}

  def put(self, our_path: tuple, value) -> None:
    path, layer = layout.layer_path(our_path) if self.stacked else (our_path, None)
    target = _get(self.abstract, path)
    if layer is None:
      _set(self.tree, path, place(value, target))
      return
    buffer, filled = self._pending.pop(path, None) or (np.empty(target.shape, target.dtype), set())
    buffer[layer] = value
    filled.add(layer)
    if len(filled) == target.shape[0]:
      _set(self.tree, path, place(buffer, target))
    else:
      self._pending[path] = (buffer, filled)


def layer_tensor(params: Mapping, our_path: tuple):
  """The array at a per-layer path, in either layout (a stacked parameter is sliced on device)."""
  if layout.has_blocks(params) and layout.is_stacked(params):
    path, layer = layout.layer_path(our_path)
    if layer is not None:
      return _get(params, path)[layer]
  return _get(params, our_path)


def load_params(hf_dir: str, cfg: ModelConfig, abstract_params: Mapping) -> dict:
  """Reads a HF directory into a pure-dict parameter tree shaped (and sharded) like `abstract_params`.

  `abstract_params` holds jax.ShapeDtypeStruct leaves, with `.sharding` set for sharded loads.
  """
  specs = _tensor_specs(cfg)
  out = ParamTree(abstract_params)
  seen: set[str] = set()
  extra: list[str] = []
  stored_head = None  # (file, tensor) of an lm_head.weight stored beside tied embeddings
  embed_file = None
  for path in _safetensors_files(hf_dir):
    st = safetensors_io.SafetensorsFile(path)
    for name in st.keys():
      if name.endswith(_IGNORED_SUFFIXES):
        continue
      if cfg.tie_embeddings and name == 'lm_head.weight':
        stored_head = (path, np.asarray(st.read(name)))  # tied checkpoints sometimes also store the head
        continue
      if name not in specs:
        extra.append(f'{name} {list(st.shape(name))} in {os.path.basename(path)}')
        continue
      our_path, our_shape, to_ours, _ = specs[name]
      tensor = st.read(name)
      if name == 'model.embed_tokens.weight':
        embed_file = path
      expected_hf = _hf_shape(specs[name])
      if tuple(tensor.shape) != expected_hf:
        raise HFFormatError(f'{path}: tensor {name} has shape {list(tensor.shape)}, expected {list(expected_hf)} '
                            f'for this config.json')
      out.put(our_path, to_ours(tensor))
      seen.add(name)
  if extra:
    raise HFFormatError(f'{hf_dir}: unexpected tensor(s) for {architecture(cfg)}: {extra[:10]}'
                        + (f' and {len(extra) - 10} more' if len(extra) > 10 else ''))
  missing = [f'{n} {list(_hf_shape(s))}' for n, s in specs.items() if n not in seen]
  if missing:
    raise HFFormatError(f'{hf_dir}: missing tensor(s) (expected shape): {missing[:10]}'
                        + (f' and {len(missing) - 10} more' if len(missing) > 10 else ''))
  if stored_head is not None:
    embed = safetensors_io.SafetensorsFile(embed_file).read('model.embed_tokens.weight')
    _check_tied_head(hf_dir, *stored_head, np.asarray(embed))
  return out.tree


def _check_tied_head(hf_dir: str, path: str, head, embed) -> None:
  """A tied model's stored lm_head.weight must be its embeddings: were it another matrix, loading
  the model tied would silently replace the head the model was trained with."""
  if head.shape != embed.shape or not np.array_equal(head.astype(np.float32), embed.astype(np.float32)):
    diff = (float(np.max(np.abs(head.astype(np.float32) - embed.astype(np.float32))))
            if head.shape == embed.shape else f'shape {list(head.shape)} vs {list(embed.shape)}')
    raise HFFormatError(f'{path}: lm_head.weight differs from model.embed_tokens.weight (max |difference| {diff}) '
                        f'but {os.path.join(hf_dir, "config.json")} says tie_word_embeddings=true; tying would drop '
                        'the stored head. Set tie_word_embeddings to false if the head is the trained one')


def _hf_shape(spec) -> tuple[int, ...]:
  _, our_shape, _, to_hf = spec
  # Shapes only: run the layout change on a zero-strided view, which allocates nothing.
  return tuple(to_hf(np.broadcast_to(np.zeros((), np.int8), our_shape)).shape)


def _host_array(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def hf_config_dict(cfg: ModelConfig, **extra) -> dict[str, Any]:
  rope: dict[str, Any] = {'rope_type': 'default', 'rope_theta': cfg.rope_theta}
  if cfg.rope_scaling is not None:
    s = cfg.rope_scaling
    rope.update(rope_type='llama3', factor=s.factor, low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor, original_max_position_embeddings=s.original_max_position_embeddings)
  arch = architecture(cfg)
  out = {
      'architectures': [arch], 'model_type': 'qwen2' if arch == 'Qwen2ForCausalLM' else 'llama',
      'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model, 'intermediate_size': cfg.ffn_dim,
      'num_hidden_layers': cfg.n_layers, 'num_attention_heads': cfg.n_heads, 'num_key_value_heads': cfg.n_kv_heads,
      'head_dim': cfg.head_dim_, 'hidden_act': 'silu', 'max_position_embeddings': cfg.max_seq_len,
      'rms_norm_eps': cfg.norm_eps, 'tie_word_embeddings': cfg.tie_embeddings, 'rope_parameters': rope,
      'rope_theta': cfg.rope_theta, 'dtype': cfg.param_dtype, 'use_cache': True,
  }
  if arch == 'LlamaForCausalLM':
    out.update(attention_bias=False, mlp_bias=False)
  else:
    out.update(use_sliding_window=False)
  out.update(extra)
  return out


def _is_export_file(name: str, extra_files: Sequence[str]) -> bool:
  return name in EXPORT_FILES or name in extra_files or bool(_SHARD_FILE.fullmatch(name))


def check_export_target(out_dir: str, *, overwrite: bool, extra_files: Sequence[str] = ()) -> None:
  """Raises unless `out_dir` may receive an export: it does not exist, or `overwrite` is set and
  it holds nothing but files an export writes (EXPORT_FILES, shards, `extra_files`)."""
  if not os.path.lexists(out_dir):
    return
  if not overwrite:
    raise FileExistsError(f'{out_dir} exists; pass overwrite=True (--overwrite) to replace a previous export')
  if not os.path.isdir(out_dir):
    raise FileExistsError(f'{out_dir} exists and is not a directory; --overwrite replaces only a previous export')
  foreign = sorted(n for n in os.listdir(out_dir)
                   if not (_is_export_file(n, extra_files) and os.path.isfile(os.path.join(out_dir, n))))
  if foreign:
    shown = ', '.join(foreign[:5]) + (f' and {len(foreign) - 5} more' if len(foreign) > 5 else '')
    raise FileExistsError(f'{out_dir} holds files an export does not write ({shown}); --overwrite replaces only '
                          f'a previous export, so choose another --out or remove them yourself')


def export(params: Mapping, cfg: ModelConfig, out_dir: str, *, dtype: str | None = None,
           max_shard_bytes: int = 2 * 1024**3, config_extra: Mapping | None = None,
           generation_config: Mapping | None = None, write_extra: Callable[[str], None] | None = None,
           extra_files: Sequence[str] = (), overwrite: bool = False) -> str:
  """Writes a `transformers`-loadable directory; built in a temp dir and renamed into place.

  `write_extra(dir)` may add the files named in `extra_files`. With `overwrite`, an existing
  `out_dir` is replaced only if it holds nothing but such files (`check_export_target`).
  """
  out_dir = os.path.abspath(out_dir)
  check_export_target(out_dir, overwrite=overwrite, extra_files=extra_files)
  dtype = dtype or cfg.param_dtype
  if dtype not in _EXPORT_DTYPES:
    raise ValueError(f'export dtype {dtype!r}: expected one of {sorted(_EXPORT_DTYPES)}')
  np_dtype = np.dtype(_EXPORT_DTYPES[dtype])
  write = jax.process_index() == 0
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.export-', dir=parent) if write else None
  try:
    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    shard_bytes = 0
    total = 0
    files: list[str] = []

    def flush():
      nonlocal shard_bytes
      if shards[-1]:
        name = f'part-{len(files):05d}.safetensors'
        safetensors_io.write(os.path.join(tmp, name), shards[-1], {'format': 'pt'})
        files.append(name)
        shards[-1] = []
        shard_bytes = 0

    weight_map: dict[str, int] = {}
    for name, (our_path, _, _, to_hf) in _tensor_specs(cfg).items():
      tensor = np.ascontiguousarray(to_hf(_host_array(layer_tensor(params, our_path))).astype(np_dtype))
      if not write:
        continue
      if shard_bytes and shard_bytes + tensor.nbytes > max_shard_bytes:
        flush()
      shards[-1].append((name, tensor))
      weight_map[name] = len(files)
      shard_bytes += tensor.nbytes
      total += tensor.nbytes
    if not write:
      return out_dir
    flush()
    if len(files) == 1:
      os.rename(os.path.join(tmp, files[0]), os.path.join(tmp, 'model.safetensors'))
    else:
      final = [f'model-{i + 1:05d}-of-{len(files):05d}.safetensors' for i in range(len(files))]
      for src, dst in zip(files, final):
        os.rename(os.path.join(tmp, src), os.path.join(tmp, dst))
      index = {'metadata': {'total_size': total}, 'weight_map': {n: final[i] for n, i in weight_map.items()}}
      _write_json(os.path.join(tmp, 'model.safetensors.index.json'), index)
    _write_json(os.path.join(tmp, 'config.json'), hf_config_dict(cfg, **{'dtype': dtype, **(config_extra or {})}))
    _write_json(os.path.join(tmp, 'generation_config.json'), {**(generation_config or {}), 'transformers_version': '5'})
    if write_extra is not None:
      write_extra(tmp)
      unnamed = sorted(n for n in os.listdir(tmp) if not _is_export_file(n, extra_files))
      if unnamed:  # else a later --overwrite would refuse this very export
        raise ValueError(f'write_extra wrote {unnamed}, which are not in extra_files {list(extra_files)}')
    if os.path.exists(out_dir):
      trash = tempfile.mkdtemp(prefix='.replaced-', dir=parent)
      os.rename(out_dir, os.path.join(trash, 'old'))
      os.rename(tmp, out_dir)
      shutil.rmtree(trash)
    else:
      os.rename(tmp, out_dir)
    tmp = None
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def _write_json(path: str, obj) -> None:
  with open(path, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
