"""Trains the project's sentencepiece tokenizer on the demo corpus (which includes the spec).

  python tools/train_tokenizer.py                      # -> deliberative/assets/tokenizer.{model,vocab}
  python tools/train_tokenizer.py --out /tmp/tok --vocab_size 2048 --seed 0

Prints the vocab size, the training time and the model's sha256. The same corpus and seed
give a byte-identical model. When the corpus is too small for the requested vocab size,
it trains the largest vocabulary the corpus allows and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sentencepiece as spm  # noqa: E402
from sentencepiece import sentencepiece_model_pb2  # noqa: E402

from deliberative.tokenizer import sentencepiece as tokenizer_lib  # noqa: E402

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train_model_proto(texts: list[str], vocab_size: int, seed: int = 0) -> bytes:
  """A serialized sentencepiece model trained on `texts` with the project's settings."""
  spm.set_random_generator_seed(seed)
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=writer,
    vocab_size=vocab_size,
    minloglevel=2,
    **tokenizer_lib.TRAINER_SETTINGS,
  )
  return writer.getvalue()


def train_largest_fitting(texts: list[str], vocab_size: int, seed: int = 0) -> tuple[bytes, int]:
  """Trains at `vocab_size`, or at the largest size the corpus supports if smaller."""
  try:
    return train_model_proto(texts, vocab_size, seed), vocab_size
  except RuntimeError as e:
    match = _TOO_HIGH.search(str(e))
    if not match:
      raise
    allowed = int(match.group(2))
    print(f"corpus supports at most {allowed} pieces (asked for {vocab_size}); using {allowed}")
    return train_model_proto(texts, allowed, seed), allowed


def vocab_text(model_proto: bytes) -> str:
  """The `.vocab` listing (piece<TAB>score per line) sentencepiece writes beside a model."""
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model_proto)
  return "".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=str(tokenizer_lib.DEFAULT_MODEL_PATH.with_suffix("")),
                      help="output prefix; writes PREFIX.model and PREFIX.vocab")
  parser.add_argument("--vocab_size", type=int, default=4096)
  parser.add_argument("--seed", type=int, default=0, help="demo corpus seed and trainer seed")
  args = parser.parse_args(argv)

  from deliberative.data import demo  # imported late: only this tool needs the generator

  texts = [t for t in demo.corpus_text(seed=args.seed) if t]
  n_chars = sum(len(t) for t in texts)
  start = time.perf_counter()
  model_proto, vocab_size = train_largest_fitting(texts, args.vocab_size, args.seed)
  seconds = time.perf_counter() - start
  tokenizer = tokenizer_lib.Tokenizer(model_proto)  # checks the special-id layout

  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".model").write_bytes(model_proto)
  out.with_suffix(".vocab").write_text(vocab_text(model_proto), encoding="utf-8")
  n_tokens = sum(len(tokenizer.encode(t)) for t in texts)
  corpus_hash = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
  print(f"corpus sha256={corpus_hash}: {len(texts)} texts, {n_chars} chars, {n_tokens} tokens "
        f"({n_chars / max(n_tokens, 1):.2f} chars/token)")
  print(f"vocab_size={vocab_size} trained in {seconds:.1f}s")
  print(f"wrote {out.with_suffix('.model')} sha256={hashlib.sha256(model_proto).hexdigest()[:16]}")


if __name__ == "__main__":
  main()
