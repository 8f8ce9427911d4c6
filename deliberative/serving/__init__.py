"""The parts of `deliberative.serve`: the OpenAI wire format (protocol.py), the batching worker
that owns the model (batcher.py) and the HTTP server (httpd.py). The entry point is serve.py."""
