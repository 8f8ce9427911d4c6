"""Tokenizers: the packaged sentencepiece model (`sentencepiece`), any Hugging Face `tokenizer.json`
(`hf`), the chat formats whose markers user text cannot forge (`chat_format`), what both backends
share (`base`), the export to Hugging Face files (`export`) and the factory (`load`).

`Tokenizer`, `load_tokenizer`, `Segment` and `Completion` stay importable from here, where user code
has always imported them."""

from deliberative.tokenizer.base import Completion, Segment
from deliberative.tokenizer.load import load_tokenizer
from deliberative.tokenizer.sentencepiece import Tokenizer

__all__ = ['Completion', 'Segment', 'Tokenizer', 'load_tokenizer']
