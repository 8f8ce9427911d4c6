"""The model's hyperparameters as a frozen dataclass, built from the `model` config section."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
REMAT_POLICIES = ('none', 'full', 'dots', 'dots_no_batch')
# 'xla': the einsum path (the CPU default and the reference in tests); 'dot_product':
# jax.nn.dot_product_attention, which picks cuDNN's fused kernel on GPUs where it applies;
# 'chunked': blockwise with an online softmax in plain JAX, never [L, L] scores (model/attention.py);
# 'splash': the TPU Pallas splash kernel. The last two cover passes without a KV cache (training,
# scoring); prefill and decode through the cache take the 'xla' path.
ATTENTION_IMPLS = ('xla', 'dot_product', 'chunked', 'splash')


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style frequency scaling (`rope_type: llama3` in Hugging Face configs)."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  ffn_dim: int
  head_dim: int | None = None  # None: d_model // n_heads
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None
  norm_eps: float = 1e-5
  qkv_bias: bool = False  # Qwen2 has biases on q, k and v
  tie_embeddings: bool = False
  max_seq_len: int = 2048  # only sizes KV caches and the exported config
  param_dtype: str = 'float32'
  dtype: str = 'float32'  # compute dtype; logits and softmax stay float32
  remat: str = 'none'
  attention: str = 'xla'  # one of ATTENTION_IMPLS
  # 'chunked' and 'splash': queries and keys this many positions at a time (splash: the largest
  # multiple of 128 at most this that divides the length, rounded up to a multiple of 128).
  attention_block: int = 512
  # Training losses take logits this many positions at a time (recomputed in the backward pass),
  # never [batch, length, vocab] at once; 0 = the whole sequence in one piece.
  loss_chunk: int = 0
  # One Block with every parameter stacked on a leading [n_layers] axis, run by jax.lax.scan:
  # compile time and program size stop growing with depth. The weights mean the same either
  # way; model/layout.py converts checkpoints and HF/GGUF tensors between the two layouts.
  scan_layers: bool = False
  # q/k/v as one [embed, kv_heads, G + 2, head_dim] kernel (each key head's G query heads, then its
  # key and value) and gate/up as one [embed, 2, ffn] kernel: two matmuls per block where there were
  # five, for decoding, whose steps are bound by kernel count (docs/benchmarks.md). The sampler's own
  # layout (inference/sampler.py), converted by layout.fuse_projections; checkpoints, imports and
  # exports keep the separate kernels, so no config sets it.
  fused_projections: bool = False

  def __post_init__(self):
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f'model: n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}')
    if self.head_dim is None and self.d_model % self.n_heads:
      raise ValueError(f'model: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; set head_dim')
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'model.remat={self.remat!r}: expected one of {REMAT_POLICIES}')
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(f'model.attention={self.attention!r}: expected one of {ATTENTION_IMPLS}')
    if self.attention_block < 1:
      raise ValueError(f'model.attention_block={self.attention_block}: expected a positive length')
    if self.loss_chunk < 0:
      raise ValueError(f'model.loss_chunk={self.loss_chunk}: expected 0 (off) or a positive length')
    for field in ('param_dtype', 'dtype'):
      if getattr(self, field) not in _DTYPES:
        raise ValueError(f'model.{field}={getattr(self, field)!r}: expected one of {sorted(_DTYPES)}')
    if self.head_dim_ % 2:
      raise ValueError(f'model: head_dim={self.head_dim_} must be even for rotary embeddings')

  @property
  def head_dim_(self) -> int:
    return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> 'ModelConfig':
    """Builds from a plain mapping or ConfigDict (the `model` section); unknown keys are an error."""
    d = dict(d.to_dict() if hasattr(d, 'to_dict') else d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f'model config: unknown field(s) {unknown}; known: {sorted(known)}')
    if d.get('fused_projections'):
      raise ValueError('model.fused_projections is the sampler\'s decode-time layout, not a config field: '
                       'checkpoints and imports hold separate q/k/v and gate/up kernels')
    scaling = d.get('rope_scaling')
    if scaling is not None and not isinstance(scaling, RopeScaling):
      d['rope_scaling'] = RopeScaling(**dict(scaling))
    return cls(**d)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def param_count(self) -> int:
    """Parameter count from shapes alone (what a published model card states)."""
    e, h, k, dh, f = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim_, self.ffn_dim
    attn = e * h * dh * 2 + e * k * dh * 2 + (h * dh + 2 * k * dh if self.qkv_bias else 0)
    per_layer = attn + 3 * e * f + 2 * e
    head = 0 if self.tie_embeddings else e * self.vocab_size
    return self.vocab_size * e + self.n_layers * per_layer + e + head
