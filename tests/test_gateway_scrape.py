"""Reading model servers' /metrics (vLLM names, GIE model-server protocol) and the scraper's health rule."""

import asyncio

import pytest

from mlplane.gateway.scrape import MetricsFormatError, parse_labels, parse_metrics, parse_models

# The shape of a vLLM v1 /metrics page (two data-parallel engines behind one port), as vLLM's
# prometheus exporter writes it: HELP/TYPE lines, engine and model_name labels, histograms, the
# _created samples of counters, lora_requests_info whose value is the time of its last update (one
# series per adapter state seen), and cache_config_info carrying the cache settings as labels.
VLLM_PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 9.0
# HELP vllm:num_requests_waiting_by_reason Number of requests waiting, by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 100.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4375
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.9125
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.4523e+08
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7882e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 89.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 89.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.25
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters=""} 1.7907001e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters="chat-lora"} 1.7907e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",cpu_offload_gb="0",\
enable_prefix_caching="True",gpu_memory_utilization="0.9",is_attention_free="False",num_cpu_blocks="9362",\
num_gpu_blocks="81767",num_gpu_blocks_override="None",sliding_window="None",swap_space_bytes="4294967296"} 1.0
"""


def test_vllm_page_gives_the_pickers_view():
    m = parse_metrics(VLLM_PAGE, now=12.5)
    assert m.waiting == 11  # both engines' queues; the _by_reason series is another metric
    assert m.running == 13
    assert m.kv_usage == 0.9125  # the fullest engine
    assert m.max_loras == 2
    assert m.running_loras == {"sql-lora", "chat-lora"}  # the most recently updated series
    assert m.waiting_loras == frozenset()
    assert m.block_size == 16 and m.num_gpu_blocks == 81767
    assert m.updated_at == 12.5


def test_bytes_and_unlabelled_samples():
    page = b"vllm:num_requests_waiting 3\nvllm:num_requests_running 1 1700000000000\nvllm:kv_cache_usage_perc 0.25\n"
    m = parse_metrics(page, now=0.0)
    assert (m.waiting, m.running, m.kv_usage) == (3, 1, 0.25)


def test_old_engines_report_gpu_cache_usage_perc():
    # vLLM deprecated vllm:gpu_cache_usage_perc (PR #18354); GIE reads kv_cache_usage_perc first (PR #1905).
    old = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.55\nvllm:num_requests_waiting{model_name="m"} 1.0\n'
    assert parse_metrics(old, now=0).kv_usage == 0.55
    both = old + 'vllm:kv_cache_usage_perc{model_name="m"} 0.33\n'
    assert parse_metrics(both, now=0).kv_usage == 0.33


def test_sglang_names_when_vllm_ones_are_absent():
    page = ('sglang:num_queue_reqs{tp_rank="0"} 4.0\nsglang:num_running_reqs{tp_rank="0"} 2.0\n'
            'sglang:token_usage{tp_rank="0"} 0.5\n')
    m = parse_metrics(page, now=0)
    assert (m.waiting, m.running, m.kv_usage) == (4, 2, 0.5)


def test_missing_series_read_as_zero_and_no_lora_info_means_no_adapters():
    m = parse_metrics("# just comments\n", now=1.0)
    assert (m.waiting, m.running, m.kv_usage, m.max_loras, m.block_size) == (0, 0, 0.0, 0, 0)
    assert m.running_loras == frozenset()


def test_label_values_with_escapes_and_braces():
    assert parse_labels(r'a="x",b="y\"z}",c="line\nnext",d="back\\slash"') == {
        "a": "x", "b": 'y"z}', "c": "line\nnext", "d": "back\\slash"}
    page = 'vllm:lora_requests_info{max_lora="1",running_lora_adapters="we}ird",waiting_lora_adapters=""} 5\n'
    assert parse_metrics(page, now=0).running_loras == {"we}ird"}


def test_cache_config_none_values_read_as_unknown():
    page = 'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n'
    m = parse_metrics(page, now=0)
    assert (m.block_size, m.num_gpu_blocks) == (16, 0)


def test_malformed_wanted_series_names_the_metric():
    with pytest.raises(MetricsFormatError, match="vllm:num_requests_waiting: value 'lots' is not a number"):
        parse_metrics('vllm:num_requests_waiting{engine="0"} lots\n', now=0)
    with pytest.raises(MetricsFormatError, match="closing"):
        parse_metrics('vllm:num_requests_running{engine="0" 1\n', now=0)


def test_models_list_keeps_cards_with_ids():
    body = (b'{"object":"list","data":[{"id":"llama","object":"model","root":"/m","parent":null},'
            b'{"id":"sql-lora","object":"model","parent":"llama"},{"object":"model"}]}')
    cards = parse_models(body)
    assert [c["id"] for c in cards] == ["llama", "sql-lora"]
    with pytest.raises(ValueError, match="'data' is not a list"):
        parse_models(b'{"object":"list"}')


def test_scraper_marks_an_endpoint_unhealthy_until_a_scrape_succeeds():
    from mlplane.gateway.pool import PoolRuntime
    from mlplane.net.http import Client, Response, start_server
    from mlplane.policy.traffic.config import named_policy
    from mlplane.policy.traffic.types import Endpoint

    async def main():
        state = {"up": True, "waiting": 7}

        async def handler(req):
            if not state["up"]:
                return Response(500, b"engine dead", content_type="text/plain")
            return Response(200, f'vllm:num_requests_waiting{{engine="0"}} {state["waiting"]}\n',
                            content_type="text/plain")

        server = await start_server(handler, "127.0.0.1", 0)
        async with Client() as client:
            ep = Endpoint(name="a", address=f"127.0.0.1:{server.port}")
            pool = PoolRuntime("p", named_policy("round-robin"), client)
            pool.set_endpoints([ep])
            assert await pool.scrape(ep) is True
            assert ep.healthy and ep.metrics.waiting == 7 and pool.ready() == [ep]
            state["up"] = False
            assert await pool.scrape(ep) is False
            assert not ep.healthy and pool.ready() == []
            assert ep.metrics.waiting == 7  # the last good scrape is kept
            state.update(up=True, waiting=2)
            assert await pool.scrape(ep) is True
            assert ep.healthy and ep.metrics.waiting == 2 and pool.ready() == [ep]
        await server.close()

    asyncio.run(asyncio.wait_for(main(), 10))
