"""Any tokenizer from a path: the backend is chosen by what the path holds."""

from __future__ import annotations

import os
from pathlib import Path

from deliberative.tokenizer.sentencepiece import Tokenizer


def load_tokenizer(path: str | os.PathLike | None = None):
  """The tokenizer at `path`, by backend: none or '' -> the packaged sentencepiece model; a
  `.model` file -> sentencepiece; a Hugging Face directory or `tokenizer.json` -> the
  `tokenizers` backend (deliberative.tokenizer.hf.HFTokenizer), with the model's own chat
  format. Both offer the interface of `Tokenizer`."""
  if not path:
    return Tokenizer.load()
  path = Path(path)
  if path.is_dir() or path.name.endswith(".json"):
    from deliberative.tokenizer.hf import HFTokenizer  # only real-model runs need `tokenizers`

    return HFTokenizer.load(path)
  if path.suffix == ".model":
    return Tokenizer.load(path)
  raise ValueError(f"tokenizer {path}: expected a sentencepiece .model file, a tokenizer.json "
                   "or a Hugging Face directory holding one")
