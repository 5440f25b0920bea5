"""`mlplane serve-sim`: a vLLM-like model server simulator.

``engine`` models one vLLM engine in virtual time (continuous batching, chunked prefill, a KV block
pool with prefix caching, preemption, LoRA slots); ``server`` drives engines in real time behind
the OpenAI HTTP API with vLLM's Prometheus metrics; ``config`` holds the constants.
"""
