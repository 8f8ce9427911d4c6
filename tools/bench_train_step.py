"""Train-step throughput: our jit'd SFT step vs a `transformers` (PyTorch) peer, same shapes, same run.

  python tools/bench_train_step.py [--preset tiny|small|smollm2] [--batch 8] [--seq_len 256] [--steps 5]
       [--remat none|full] [--attention xla|dot_product|chunked] [--loss_chunk N] [--train_layers N,...]

`--train_layers 8,4`: also our step training only the top 8 (then 4) blocks (optim.train_layers),
each as a ratio to our full step in the same run.

`--preset smollm2` is SmolLM2-135M's shape (30 layers, vocab 49,152, tied embeddings), random
weights: the step's cost does not depend on their values.

Both sides: fp32, AdamW, causal LM loss on every token of random ids; the peer is
`LlamaForCausalLM` with the preset's shape (torch threads = JAX's intra-op threads = all
cores). Prints tokens/s (at the median step time) for each and the ratio ours/peer. Needs
requirements-test.txt (torch, transformers). Never run inside the timed test suite;
tools/benchmark.py runs these same steps beside the decode and RL measurements.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import ml_collections  # noqa: E402

from deliberative import config_lib  # noqa: E402
from deliberative.model.config import ATTENTION_IMPLS, ModelConfig  # noqa: E402
from deliberative.trainers import state as state_lib  # noqa: E402
from deliberative.trainers import supervised  # noqa: E402


def ours_step_seconds(cfg: ModelConfig, batch: int, seq_len: int, steps: int, train_layers: int = 0) -> list[float]:
  """Seconds of each of `steps` jit'd SFT steps after a compiling one (tools/benchmark.py shares it)."""
  config = ml_collections.ConfigDict({
      'mesh': config_lib.default_mesh_config(),
      'optim': dict(lr=1e-3, warmup_steps=1, min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                    grad_clip=1.0, accum_steps=1, train_layers=train_layers)})
  setup = state_lib.make_setup(config, cfg, total_steps=steps + 2)
  state = state_lib.init_state(setup, seed=0)
  step_fn = supervised.make_train_step(setup, accum_steps=1)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.vocab_size, size=(batch, seq_len + 1)).astype(np.int32)
  host = {'tokens': ids[:, :-1], 'targets': ids[:, 1:], 'weights': np.ones((batch, seq_len), np.float32),
          'segment_ids': np.ones((batch, seq_len), np.int32),
          'positions': np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()}
  from deliberative.trainers import runtime
  batch_arrays = runtime.put_batch(host, setup.batch_sharding())
  state, metrics = step_fn(state, batch_arrays)  # compile
  jax.block_until_ready(metrics)
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch_arrays)
    jax.block_until_ready(metrics)  # per-step times, so a caller can take their median
    seconds.append(time.perf_counter() - start)
  return seconds


def hf_llama(cfg: ModelConfig, max_positions: int):
  """`transformers.LlamaForCausalLM` of `cfg`'s shape, fp32, random weights (seeded)."""
  import torch
  import transformers
  torch.manual_seed(0)
  return transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
      head_dim=cfg.head_dim_, max_position_embeddings=max(max_positions, 128), tie_word_embeddings=cfg.tie_embeddings,
      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, attn_implementation='sdpa'))


def peer_step_seconds(cfg: ModelConfig, batch: int, seq_len: int, steps: int) -> list[float]:
  """Seconds of each of `steps` `transformers` AdamW steps after a warm-up one."""
  import torch
  model = hf_llama(cfg, seq_len)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
  ids = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1))

  def step():
    out = model(input_ids=ids[:, :-1], labels=ids[:, :-1])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  step()
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - start)
  return seconds


def tokens_per_second(batch: int, seq_len: int, seconds: list[float]) -> float:
  """Throughput at the median step time: one slow step on a shared machine does not move it."""
  return batch * seq_len / float(np.median(seconds))


def ours(cfg: ModelConfig, batch: int, seq_len: int, steps: int) -> float:
  return tokens_per_second(batch, seq_len, ours_step_seconds(cfg, batch, seq_len, steps))


def peer(cfg: ModelConfig, batch: int, seq_len: int, steps: int) -> float:
  return tokens_per_second(batch, seq_len, peer_step_seconds(cfg, batch, seq_len, steps))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='tiny', choices=('tiny', 'small', 'smollm2'))
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--remat', default=None, help="ours: the model's remat policy (default: the preset's)")
  parser.add_argument('--attention', default=None, choices=ATTENTION_IMPLS, help='ours: model.attention')
  parser.add_argument('--loss_chunk', type=int, default=None, help='ours: model.loss_chunk (0 = whole sequence)')
  parser.add_argument('--train_layers', default='', help='ours: comma-separated optim.train_layers to time as well')
  args = parser.parse_args(argv)
  try:
    partial = [int(n) for n in args.train_layers.split(',') if n.strip()]
  except ValueError:
    parser.error(f'--train_layers {args.train_layers}: expected comma-separated block counts, e.g. 8,4')
  overrides = {k: getattr(args, k) for k in ('remat', 'attention', 'loss_chunk') if getattr(args, k) is not None}
  cfg = ModelConfig.from_dict(config_lib.model_config(args.preset, **overrides))
  ours_tps = ours(cfg, args.batch, args.seq_len, args.steps)
  peer_tps = peer(cfg, args.batch, args.seq_len, args.steps)
  print(f'{args.preset} B={args.batch} L={args.seq_len} remat={cfg.remat} attention={cfg.attention} '
        f'loss_chunk={cfg.loss_chunk} on {jax.devices()[0].platform} '
        f'({os.cpu_count()} cores)')
  print(f'  ours (jax jit)          {ours_tps:10,.0f} tok/s')
  print(f'  transformers (torch)    {peer_tps:10,.0f} tok/s')
  print(f'  ratio ours/peer         {ours_tps / peer_tps:10.2f}x')
  for n in partial:
    tps = tokens_per_second(args.batch, args.seq_len, ours_step_seconds(cfg, args.batch, args.seq_len, args.steps, n))
    print(f'  ours, top {n:>2} of {cfg.n_layers} blocks {tps:8,.0f} tok/s  {tps / ours_tps:5.2f}x our full step')
  return 0


if __name__ == '__main__':
  sys.exit(main())
