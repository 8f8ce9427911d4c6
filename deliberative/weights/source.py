"""One place that knows where a model comes from: an Orbax run, a Hugging Face directory, a GGUF file.

  src = open_source(path)          # FileNotFoundError naming `field` when it is none of them
  src.architecture(dtype=...)      # ModelConfig; keyword arguments set what the files do not fix
  src.tokenizer()                  # the tokenizer its weights were trained with (None: unknown)
  src.meta                         # what the source records ({'source': ...} for a HF dir)
  src.load_params(cfg, abstract)   # parameters laid out (and sharded) as `abstract` says
  cfg, model, meta = load(path)    # all of it at once: the model built from the source

A GGUF file is imported once into a Hugging Face directory in a cache (`cache_dir()`), keyed
by the file's absolute path, size and modification time, and is from then on that directory:
one loader for real models, and the second run starts in seconds instead of re-dequantizing.
The import is written to a temporary directory and renamed into place, so a run killed
mid-import (or two processes importing at once) never leaves a half directory that looks done.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import tempfile
from typing import Any, Mapping

from jax.sharding import Mesh

from deliberative.model import loading, sharding
from deliberative.model.config import ModelConfig
from deliberative.weights import checkpoints, hf

GGUF_SUFFIX = '.gguf'


def cache_dir() -> str:
  """Where imported GGUF files live: $DELIBERATIVE_CACHE/models, else ~/.cache/deliberative/models."""
  root = os.environ.get('DELIBERATIVE_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'deliberative')
  return os.path.join(root, 'models')


def is_gguf(path: str) -> bool:
  return path.lower().endswith(GGUF_SUFFIX) and os.path.isfile(path)


def _gguf_cache_path(path: str) -> str:
  path = os.path.abspath(path)
  st = os.stat(path)
  key = hashlib.sha256(f'{path}\x00{st.st_size}\x00{st.st_mtime_ns}'.encode()).hexdigest()[:16]
  stem = os.path.basename(path)[:-len(GGUF_SUFFIX)]
  return os.path.join(cache_dir(), f'{stem}-{key}')


def gguf_hf_dir(path: str, log=print) -> str:
  """The Hugging Face directory a GGUF file imports to, importing it on first use."""
  out = _gguf_cache_path(path)
  if hf.is_hf_dir(out):
    return out
  from deliberative.weights import gguf  # only GGUF users need the gguf package
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.import-', dir=os.path.dirname(out))
  try:
    log(f'importing {path} into {out} (once; later runs reuse it)')
    gguf.write_hf_dir(path, os.path.join(tmp, 'model'), dtype='float32')
    try:
      os.rename(os.path.join(tmp, 'model'), out)
    except OSError:
      if not hf.is_hf_dir(out):  # not another process winning the race: a real failure
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


@dataclasses.dataclass(frozen=True)
class ModelSource:
  path: str  # as the user gave it
  kind: str  # 'orbax' | 'hf' | 'gguf'

  @property
  def directory(self) -> str:
    """The Orbax checkpoint root, or the Hugging Face directory (a GGUF's, imported on first use)."""
    if self.kind == 'gguf':
      return gguf_hf_dir(self.path)
    return checkpoints.resolve_dir(self.path) if self.kind == 'orbax' else self.path

  @property
  def is_real_model(self) -> bool:
    """Weights from outside the project (a Hugging Face directory or GGUF): they bring their tokenizer."""
    return self.kind in ('hf', 'gguf')

  @functools.cached_property
  def meta(self) -> dict[str, Any]:
    if self.kind == 'orbax':
      return checkpoints.load_meta(self.directory)
    return {'source': f'{self.kind}:{os.path.abspath(self.path)}'}

  def architecture(self, **run_fields) -> ModelConfig:
    """The shape the files fix; `run_fields` (dtypes, remat) are the run's choice."""
    if self.kind == 'orbax':
      base = checkpoints.model_config_from_meta(self.meta).to_dict()
      return ModelConfig.from_dict({**base, **run_fields})
    return hf.read_config(self.directory, **run_fields)

  def tokenizer_path(self) -> str | None:
    """What `tokenizer_for` loads to get this model's tokenizer: its own for a real model, the
    recorded one for an Orbax run ('default' = the packaged sentencepiece model), None if unknown."""
    if self.kind == 'gguf':
      return os.path.abspath(self.path)
    if self.kind == 'hf':
      # Our own sentencepiece runs export their model as tokenizer.model (tokenizer/export.py): that
      # one, not the tokenizer.json built from it, whose chat template is no model family's.
      for name in ('tokenizer.model', 'tokenizer.json'):
        if os.path.isfile(os.path.join(self.path, name)):
          return os.path.abspath(os.path.join(self.path, name) if name.endswith('.model') else self.path)
      return None
    return self.meta.get('tokenizer')

  def tokenizer(self):
    path = self.tokenizer_path()
    return None if path is None else tokenizer_for(path)

  def load_params(self, cfg: ModelConfig, abstract: Mapping) -> dict:
    if self.kind == 'orbax':
      return checkpoints.restore_params(self.directory, abstract)
    return hf.load_params(self.directory, cfg, abstract)


def find(path: str) -> ModelSource | None:
  """The source at `path`, or None when it holds no model (cheap: a GGUF is not imported here)."""
  if not path:
    return None
  if is_gguf(path):
    return ModelSource(path, 'gguf')
  if hf.is_hf_dir(path):
    return ModelSource(path, 'hf')
  if checkpoints.latest_step(checkpoints.resolve_dir(path)) is not None:
    return ModelSource(path, 'orbax')
  return None


def open_source(path: str | ModelSource, field: str = 'init_from') -> ModelSource:
  """The model at `path`, ready to read (a GGUF imported into the cache first). An opened ModelSource
  is returned as is: a run opens each of its models once (trainers/loop.begin) and hands it down, so
  its meta is read and a GGUF's import checked once, not by every layer that asks."""
  if isinstance(path, ModelSource):
    return path
  src = find(path)
  if src is None:
    raise FileNotFoundError(f'config.{field}={path!r}: neither a Hugging Face directory (config.json + '
                            f'*.safetensors), a GGUF file nor an Orbax checkpoint/workdir')
  src.directory  # a GGUF is imported now, before any other work
  return src


def load(path: str, mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES, **config_overrides):
  """Any model source (Orbax checkpoint or workdir, Hugging Face directory, GGUF file) ->
  (config, model, meta), the model built sharded over `mesh` when one is given.

  `config_overrides` set fields the files do not fix, such as compute dtype or remat.
  """
  src = open_source(path, 'path')
  cfg = src.architecture(**config_overrides)
  params = src.load_params(cfg, loading.abstract_params(cfg, mesh, rules))
  return cfg, loading.from_params(cfg, params), src.meta


def tokenizer_for(path: str):
  """load_tokenizer(path), where `path` may also be a GGUF file (the tokenizer its imported
  directory holds: read from there once imported, else built from the file's header, so that no
  weights are imported for a tokenizer) or 'default' (the packaged sentencepiece model)."""
  from deliberative.tokenizer.load import load_tokenizer
  if path == 'default':
    return load_tokenizer(None)
  if is_gguf(path):
    imported = _gguf_cache_path(path)
    if hf.is_hf_dir(imported):  # under a second; the header takes seconds (SmolLM2: ~6 s on 2 cores)
      return load_tokenizer(imported)
    from deliberative.weights import gguf  # only GGUF users need the gguf package
    return gguf.hf_tokenizer(path)
  return load_tokenizer(path)


# The config field holding the weights a run starts from (SFT/judge: init_from; RL: policy_init).
WEIGHT_FIELDS = ('init_from', 'policy_init')


def run_sources(config) -> dict[str, ModelSource]:
  """The models a run of `config` reads (init_from / policy_init / judge_init), each opened once;
  a field that is empty or holds no model is left out (its trainer names it when it needs one)."""
  fields = (*WEIGHT_FIELDS, 'judge_init')
  found = {f: find(config[f]) for f in fields if f in config and config[f]}
  return {f: open_source(src, f) for f, src in found.items() if src is not None}


def run_tokenizer_path(config, sources: Mapping[str, ModelSource] | None = None) -> str:
  """The tokenizer a run uses: `config.tokenizer` when set; else the one its starting weights
  came with (a real model's own; what an Orbax run recorded); else the packaged one ('default').
  `sources`: the run's opened models (run_sources), else they are looked up here."""
  if config.tokenizer:
    return 'default' if config.tokenizer == 'default' else os.path.abspath(config.tokenizer)
  for field in WEIGHT_FIELDS:
    if sources is not None:
      src = sources.get(field)
    else:
      src = find(config[field]) if field in config else None
    if src is not None:
      return src.tokenizer_path() or 'default'
  return 'default'


def run_tokenizer(config, sources: Mapping[str, ModelSource] | None = None):
  return tokenizer_for(run_tokenizer_path(config, sources))


def tokenizer_record(tokenizer, path: str) -> dict[str, Any]:
  """What a checkpoint records of its tokenizer, so a resume and an export load the same one."""
  fmt = getattr(tokenizer, 'format', None)
  return {'source': path, 'version': tokenizer.version, 'vocab_size': tokenizer.vocab_size,
          'chat_format': fmt.family if fmt is not None else 'deliberative',
          'added_tokens': [list(t) for t in getattr(tokenizer, 'added_tokens', ())]}
