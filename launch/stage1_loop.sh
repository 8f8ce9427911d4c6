#!/usr/bin/env bash
# The method's loop on this machine (issue 12, part 5): SmolLM2-135M-Instruct served by
# deliberative.serve is G_base through the endpoint backend, the same GGUF is G_RM on the own
# backend (spec-prefix KV cache), stage 1 writes traces for N demo prompts, and SFT trains on them.
#
#   bash launch/stage1_loop.sh [ROOT=runs/stage1_loop] [N_PROMPTS=24] [SFT_STEPS=20]
#
# The SFT step keeps 135M parameters' activations and logits small (remat, chunked loss): without
# them a step of 8 x 512 tokens took 15 GB and was OOM-killed on the 24 GB machine beside other jobs.
# Run again, the script reuses the finished stage-1 workdir (resumable) and trains again.
#
# On a pod the same commands take a large reasoning model: serve it (or vLLM) on the host, point
# --config.base.endpoint.base_url at it, and give --config.judge.checkpoint a capable judge.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/stage1_loop}
N_PROMPTS=${2:-24}
SFT_STEPS=${3:-20}
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-8765}
GGUF=$("$PY" -c "from deliberative import config_lib; print(config_lib.installed_model('smollm2'))")
mkdir -p "$ROOT"
start=$(date +%s)

"$PY" -m deliberative.serve --checkpoint "$GGUF" --port "$PORT" --model_name smollm2 --max_batch 32 \
  --max_new_tokens 256 > "$ROOT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "server died: $(tail -5 "$ROOT/serve.log")"; exit 1; }
  sleep 1
done
echo "server up after $(( $(date +%s) - start )) s"

"$PY" -m deliberative.generate --config configs/generate.py:size=smollm2 --workdir "$ROOT/generate" \
  --config.prompts.num_prompts="$N_PROMPTS" --config.select.num_completions=2 --config.select.num_grades=2 \
  --config.base.max_new_tokens=192 \
  --config.base.backend=endpoint --config.base.endpoint.base_url="http://127.0.0.1:$PORT/v1" \
  --config.base.endpoint.model=smollm2 --config.base.endpoint.concurrency=4 --config.base.endpoint.timeout_s=1800 | tee "$ROOT/generate.log"
gen_done=$(date +%s)
echo "stage 1 done after $(( gen_done - start )) s"
kill $SERVER; wait $SERVER 2>/dev/null || true

DATASET="$ROOT/generate/data/stage1_traces/1.0.0"
"$PY" -m deliberative.train --config configs/sft.py:size=smollm2 --workdir "$ROOT/sft" \
  --config.data.dataset="$DATASET" --config.evals.split=train --config.evals.final_splits='' \
  --config.total_steps="$SFT_STEPS" --config.data.seq_len=512 --config.batch_size=4 \
  --config.model.remat=full --config.model.loss_chunk=128 \
  --config.checkpoint.every_steps="$SFT_STEPS" --config.evals.every_steps="$SFT_STEPS" \
  --config.evals.num_generations=8 --config.evals.num_generations_at_start=8 --config.evals.max_new_tokens=64 \
  | tee "$ROOT/sft.log"
echo "stage 1 $(( gen_done - start )) s, SFT $(( $(date +%s) - gen_done )) s, total $(( $(date +%s) - start )) s"
