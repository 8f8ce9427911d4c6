"""A model ready to generate: the sampler (`sampler`: bucketed, compiled once per shape, KV-cached
decoding) and the policy that wraps a model source, its tokenizer and a sampler (`policy`).
Every sampler in the package is built by `sampler.for_model`.

`Policy` stays importable from here, where user code has always imported it."""

from deliberative.inference.policy import Policy

__all__ = ['Policy']
