"""A model loaded for inference: any model source, its tokenizer and a sampler on the default mesh.

    policy = Policy('runs/sft', batch_size=16, max_new_tokens=256)
    ids = policy.prompt_ids({'messages': [{'role': 'user', 'content': 'hi'}]})
    out = policy.sample([ids])                      # SampleOutput; policy.rng advances
    policy.tokenizer.parse_completion(out.completion(0), reasoning=policy.reasoning)

Shared by `deliberative.evaluate`, `deliberative.serve` and `deliberative.generate`: the path
is an Orbax run or checkpoint, a Hugging Face directory or a GGUF file (weights/source.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Prompt lengths the sampler compiles for; a longer prompt is refused (counted), never cut.
LENGTH_BUCKETS = (64, 128, 256, 512, 1024, 2048)


class Policy:
  """A model's tokenizer, parameters and sampler on the default mesh.

  `batch_size` is rounded up to the mesh's batch multiple; `batch_buckets` (default: that one
  size) are the batch shapes the sampler compiles for, a server's choice when requests arrive
  in varying numbers. `reasoning`: 'auto' opens a reasoning block in the generation prompt when
  the model's vocabulary holds the marker (a run trained here), not for a pretrained model whose
  tokenizer added it; 'on' / 'off' force it.
  """

  def __init__(self, path: str, *, batch_size: int = 16, max_new_tokens: int = 256, reasoning: str = 'auto',
               batch_buckets: Sequence[int] | None = None, length_buckets: Sequence[int] = LENGTH_BUCKETS,
               field: str = 'checkpoint', seed: int = 0):
    from deliberative import tokenizer as tokenizer_lib
    from deliberative.weights import source
    self.source = source.open_source(path, field)
    cfg = self.source.architecture()
    self._build(path, self.source.tokenizer() or tokenizer_lib.load_tokenizer(None), cfg,
                lambda abstract: self.source.load_params(cfg, abstract), batch_size=batch_size,
                max_new_tokens=max_new_tokens, reasoning=reasoning, batch_buckets=batch_buckets,
                length_buckets=length_buckets, seed=seed)

  @classmethod
  def random(cls, size: str, *, seed: int = 0, max_seq_len: int = 2048, **options) -> Policy:
    """A random-init `size` preset (config_lib) with the packaged tokenizer: the plumbing of smoke
    runs and benchmarks, where no trained model is needed. `options` as for a path."""
    from deliberative import config_lib, tokenizer as tokenizer_lib
    from deliberative.model.config import ModelConfig
    policy = cls.__new__(cls)
    policy.source = None
    cfg = ModelConfig.from_dict(config_lib.model_config(size, max_seq_len=max_seq_len))
    policy._build(f'random-init:{size}', tokenizer_lib.load_tokenizer(None), cfg,
                  lambda abstract: random_params(abstract, seed), seed=seed, **options)
    return policy

  def _build(self, name: str, tokenizer, cfg, load_params, *, batch_size: int = 16, max_new_tokens: int = 256,
             reasoning: str = 'auto', batch_buckets: Sequence[int] | None = None,
             length_buckets: Sequence[int] = LENGTH_BUCKETS, seed: int = 0) -> None:
    import jax
    from deliberative import config_lib
    from deliberative.model import loading, sharding
    from deliberative.inference import sampler as sampler_lib
    self.name, self.tokenizer, self.cfg = name, tokenizer, cfg
    mesh_cfg = config_lib.default_mesh_config()
    self.mesh = sharding.make_mesh(mesh_cfg)
    self.rules = sharding.normalize_rules(mesh_cfg.rules)
    self.params = load_params(loading.abstract_params(self.cfg, self.mesh, self.rules))
    self.batch_multiple = multiple = sharding.batch_multiple(self.mesh, self.rules)
    self.batch_size = -(-batch_size // multiple) * multiple
    buckets = tuple(batch_buckets) if batch_buckets else (self.batch_size,)
    self.length_buckets = tuple(sorted(length_buckets))
    self.sampler = sampler_lib.for_model(self.cfg, self.tokenizer, mesh=self.mesh, rules=self.rules,
                                         batch_multiple=multiple, length_buckets=self.length_buckets,
                                         batch_buckets=buckets)
    self.sampling = sampler_lib.SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    self.rng = jax.random.key(seed)
    # A model never trained on the reasoning marker (its row is not in its vocabulary) ends its turn
    # at once when the prompt opens one: it answers in its own format instead.
    think_id = self.tokenizer.think_id
    self.reasoning = think_id < self.cfg.vocab_size if reasoning == 'auto' else reasoning == 'on'

  @property
  def max_prompt_len(self) -> int:
    return self.length_buckets[-1]

  def prompt_ids(self, record: Mapping[str, Any], system: str | None = None) -> list[int]:
    """The generation prompt of `record['messages']`; `system` replaces any system message."""
    messages = list(record['messages'])
    if system:
      messages = [{'role': 'system', 'content': system}] + [m for m in messages if m['role'] != 'system']
    ids, _ = self.tokenizer.render_chat(messages, add_generation_prompt=True)
    if not self.reasoning:  # the generation prompt without its reasoning-block opening
      from deliberative.tokenizer.base import without_reasoning_opener
      return without_reasoning_opener(ids, self.tokenizer.think_id)
    return list(ids)

  def sample(self, prompts: Sequence[Sequence[int]], sampling=None, rng=None):
    """One sampler call (at most the largest batch bucket of prompts); `rng` defaults to the
    policy's own stream, which advances."""
    import jax
    if rng is None:
      self.rng, rng = jax.random.split(self.rng)
    return self.sampler(self.params, prompts, rng, sampling or self.sampling)


def spec_prompt(spec, category: str | None) -> str:
  """The system prompt of the spec-in-context arm: spec(category), or the whole spec."""
  if category and category in spec.categories:
    return spec.render(category)
  return spec.to_text()


def random_params(abstract, seed: int) -> dict:
  """Weights drawn on the host (normal, std 0.02; norm scales 1), placed with `abstract`'s
  shardings. The model's own init compiles for ~20 s on 2 busy cores; a smoke model needs no
  more than a fixed, seeded draw."""
  import jax
  import numpy as np
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if 'scale' in jax.tree_util.keystr(path):
      value = np.ones(leaf.shape, leaf.dtype)
    else:
      value = (rng.standard_normal(leaf.shape) * 0.02).astype(leaf.dtype)
    return jax.device_put(value, leaf.sharding) if getattr(leaf, 'sharding', None) is not None else value

  return jax.tree_util.tree_map_with_path(draw, abstract)
