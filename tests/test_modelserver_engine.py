"""The simulated vLLM engine in virtual time: batching, prefix cache, eviction, preemption, LoRA slots,
and its configuration file. Behaviour follows vLLM V1's scheduler and prefix-caching design
(vllm/v1/core/sched/scheduler.py, docs.vllm.ai/en/latest/design/prefix_caching)."""

import pytest

from mlplane.modelserver.config import ConfigError, EngineConfig, config_from_mapping, load_config
from mlplane.modelserver.engine import (Engine, RequestError, SimRequest, block_hashes_of_text, output_length,
                                        prompt_tokens_of_text)


def request(text: str, max_tokens: int = 4, *, rid: str = "r", lora: str | None = None, block_size: int = 16):
    data = text.encode()
    return SimRequest(rid, prompt_tokens_of_text(data), max_tokens, block_hashes_of_text(data, block_size, lora),
                      lora=lora)


def run(engine: Engine, now: float = 0.0, *, until=None, max_steps: int = 100000) -> float:
    """Step until idle (or until ``until()`` holds); return the virtual time."""
    for _ in range(max_steps):
        if not engine.has_work() or (until and until()):
            return now
        now += engine.step(now).duration
    raise AssertionError("engine did not finish")


def prompt(seed: str, tokens: int) -> str:
    """Text of exactly ``tokens`` tokens (4 bytes each) that differs from other seeds in block 0."""
    unit = (seed * 4)[:4]
    return (unit * tokens)[: tokens * 4]


def test_repeated_prompt_hits_prefix_cache_and_skips_prefill():
    e = Engine()
    first = request(prompt("a", 4000))
    e.add(first, 0.0)
    t = run(e)
    second = request(prompt("a", 4000))
    e.add(second, t)
    run(e, t)
    ttft_cold = first.first_token_time - first.arrival
    ttft_warm = second.first_token_time - second.arrival
    assert first.cached_tokens == 0
    assert second.cached_tokens == 3984  # 249 full blocks; the last token is always computed
    assert ttft_warm < ttft_cold / 5
    assert e.stats.prefix_queries == 8000 and e.stats.prefix_hits == 3984


def test_shared_prefix_hits_only_leading_blocks_and_lora_scopes_the_cache():
    e = Engine()
    e.add(request(prompt("a", 64) + prompt("b", 64)), 0.0)
    t = run(e)
    other_suffix = request(prompt("a", 64) + prompt("c", 64))
    e.add(other_suffix, t)
    t = run(e, t)
    assert other_suffix.cached_tokens == 64
    same_text_other_adapter = request(prompt("a", 128), lora="sql")
    e.add(same_text_other_adapter, t)
    run(e, t)
    assert same_text_other_adapter.cached_tokens == 0


def test_lru_eviction_under_pressure_keeps_recent_prefixes():
    # 40 blocks of 16 tokens; each prompt is 16 blocks + 1 token, so two fit and a third evicts.
    e = Engine(EngineConfig(num_gpu_blocks=40))
    t = 0.0
    for name in ("a", "b", "c"):
        e.add(request(prompt(name, 257), 1), t)
        t = run(e, t)
    assert e.pool.evictions > 0
    assert e.kv_usage() == 0.0  # cached but unused blocks count as free
    again_c = request(prompt("c", 257), 1)
    e.add(again_c, t)
    t = run(e, t)
    again_a = request(prompt("a", 257), 1)
    e.add(again_a, t)
    run(e, t)
    assert again_c.cached_tokens == 256  # most recent prompt still cached
    assert again_a.cached_tokens < 256  # the oldest one was evicted (its tail first)


def test_token_budget_limits_prefill_per_step():
    e = Engine(EngineConfig(max_num_batched_tokens=512))
    e.add(request(prompt("a", 2000), 2, rid="long"), 0.0)
    e.add(request(prompt("b", 100), 2, rid="short"), 0.0)
    r1 = e.step(0.0)
    assert r1.prefill_tokens == 512 and not r1.emitted
    r2 = e.step(r1.duration)
    assert r2.prefill_tokens == 512
    steps = 2
    while not any(r.id == "long" for r in e.step(0.0).emitted):
        steps += 1
    assert steps + 1 == 4  # 2000 tokens in chunks of 512


def test_max_num_seqs_caps_running_requests():
    e = Engine(EngineConfig(max_num_seqs=2))
    reqs = [request(prompt(str(i), 40), 50, rid=str(i)) for i in range(5)]
    for r in reqs:
        e.add(r, 0.0)
    e.step(0.0)
    assert e.num_running == 2 and e.num_waiting == 3
    run(e)
    assert all(r.finished and r.output_tokens == 50 for r in reqs)


def test_decode_step_time_grows_with_batch_size():
    def decode_step(batch: int) -> float:
        e = Engine()
        for i in range(batch):
            e.add(request(prompt(f"{i}x", 100), 10, rid=str(i)), 0.0)
        r = e.step(0.0)
        while r.prefill_tokens:  # prefill of all, in chunks of 8192 tokens
            r = e.step(0.0)
        assert r.decode_seqs == batch
        return r.duration

    d1, d64, d256 = decode_step(1), decode_step(64), decode_step(256)
    assert 0.009 < d1 < 0.016  # ITL 10-15 ms at batch 1 for an 8B model on an H100
    assert d1 < d64 < d256


def test_long_prompt_prefill_pays_attention_term():
    cfg = EngineConfig(max_num_batched_tokens=65536)
    short, long_ = Engine(cfg), Engine(cfg)
    short.add(request(prompt("a", 1000), 1), 0.0)
    long_.add(request(prompt("a", 32000), 1), 0.0)
    per_token_short = short.step(0.0).duration / 1000
    per_token_long = long_.step(0.0).duration / 32000
    assert per_token_long > per_token_short * 0.5  # overheads amortised, yet long costs more per token
    assert long_.stats.prompt_tokens == 32000


def test_preemption_when_blocks_run_out_frees_and_later_completes():
    # 20 blocks; two requests of 100 prompt tokens growing to 250 tokens each cannot both fit.
    e = Engine(EngineConfig(num_gpu_blocks=20))
    a = request(prompt("a", 100), 150, rid="a")
    b = request(prompt("b", 100), 150, rid="b")
    e.add(a, 0.0)
    e.add(b, 0.0)
    run(e)
    assert e.stats.preemptions >= 1
    assert b.preemptions >= 1 and a.preemptions == 0  # the newest request is the victim
    assert a.finished and b.finished and a.output_tokens == b.output_tokens == 150
    assert e.pool.used == 0
    assert b.finish_time > a.finish_time


def test_lora_requests_wait_while_max_loras_adapters_run():
    e = Engine(EngineConfig(max_loras=1))
    a = request(prompt("a", 50), 20, rid="a", lora="sql")
    b = request(prompt("b", 50), 20, rid="b", lora="chat")
    base = request(prompt("c", 50), 20, rid="base")
    for r in (a, b, base):
        e.add(r, 0.0)
    e.step(0.0)
    assert e.running_loras() == {"sql"} and e.waiting_loras() == {"chat"}
    assert base in e.running  # a base-model request is not held back by the adapter limit
    t = run(e, until=lambda: a.finished)
    assert b.first_token_time is None or b.first_token_time > a.finish_time - 1e-9
    run(e, t)
    assert b.finished and b.first_token_time >= a.finish_time


def test_same_inputs_give_same_timings():
    def trace():
        e = Engine(EngineConfig(num_gpu_blocks=200, max_num_batched_tokens=1024))
        t, out = 0.0, []
        reqs = [request(prompt(str(i % 3), 300 + 7 * i), 5 + i, rid=str(i)) for i in range(12)]
        for r in reqs:
            e.add(r, t)
            t += e.step(t).duration
        run(e, t)
        return [(r.first_token_time, r.finish_time, r.cached_tokens) for r in reqs]

    assert trace() == trace()


def test_output_length_is_seeded_and_independent_of_server():
    lengths = [output_length(7, f"prompt {i}".encode(), 200, 4096) for i in range(200)]
    assert lengths == [output_length(7, f"prompt {i}".encode(), 200, 4096) for i in range(200)]
    assert lengths != [output_length(8, f"prompt {i}".encode(), 200, 4096) for i in range(200)]
    assert 120 < sum(lengths) / len(lengths) < 300 and min(lengths) >= 1
    assert output_length(7, b"x", 10**9, 16) <= 16


def test_requests_that_can_never_run_are_refused():
    e = Engine(EngineConfig(max_model_len=1000, num_gpu_blocks=10))
    with pytest.raises(RequestError, match="maximum context length is 1000 tokens"):
        e.add(request(prompt("a", 900), 200), 0.0)
    with pytest.raises(RequestError, match="KV cache"):
        e.add(request(prompt("a", 150), 20), 0.0)
    assert not e.has_work()


def test_abort_frees_blocks():
    e = Engine()
    r = request(prompt("a", 500), 100)
    e.add(r, 0.0)
    e.step(0.0)
    assert e.pool.used > 0
    e.abort(r)
    assert e.pool.used == 0 and not e.has_work() and r.aborted


def test_config_file_is_strict(tmp_path):
    f = tmp_path / "sim.yaml"
    f.write_text("max-num-seqs: 8\nprefill_token_s: 0.0001\ntime_scale: 0.5\n")
    cfg = load_config(f)
    assert cfg.max_num_seqs == 8 and cfg.prefill_token_s == 0.0001 and cfg.time_scale == 0.5
    f.write_text("max_num_seq: 8\n")
    with pytest.raises(ConfigError, match="unknown key 'max_num_seq'"):
        load_config(f)
    with pytest.raises(ConfigError, match="max_num_seqs: expected int, got str"):
        config_from_mapping({"max_num_seqs": "8"})
    with pytest.raises(ConfigError, match="block_size: must be at least 1"):
        config_from_mapping({"block_size": 0})
    with pytest.raises(ConfigError, match="time_scale"):
        config_from_mapping({"time_scale": 0})
    f.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(f)
    assert EngineConfig().num_gpu_blocks == 30517
