"""Stage 1 of the method (docs/design.md, stage 2): spec-conditioned trace generation with judge filtering.

  prompt.py    the stage-1 system prompt (spec(category) + how to reason over it)
  select.py    min-of-k scores and the best-above-threshold choice
  endpoint.py  an OpenAI-compatible chat-completions client (retries, backoff, error accounting)
  backends.py  G_base and G_RM on the project's own models, or on an endpoint
  shards.py    the resumable workdir: manifest, atomic shard files, summary
  pipeline.py  the loop that ties them together (entry: deliberative/generate.py)
  labels.py    stage 1 with the labels as the judge (configs/generate.py:source=labels): traces written
               from imported prompts' labels (label_input, label_cot, label_answers, label_text)
"""
