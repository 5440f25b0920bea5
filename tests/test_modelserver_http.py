"""`mlplane serve-sim` over real HTTP on 127.0.0.1: vLLM's OpenAI API (streaming and not), usage, /metrics,
/v1/models, errors, several servers in one process, and the command line."""

import asyncio
import os
import re
import signal
import subprocess
import sys

import orjson
import pytest

from mlplane.bench.harness import PEERS, free_port, router_argv
from mlplane.modelserver.config import EngineConfig
from mlplane.modelserver.server import SimServer, serve
from mlplane.net.http import Client

MODEL = "sim-8b"
FAST = EngineConfig(time_scale=0.01)  # a hundred times faster than an H100
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def post(client: Client, server: SimServer, path: str, body, headers=None):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.request("POST", f"127.0.0.1:{server.port}", path,
                                headers={"content-type": "application/json", **(headers or {})}, body=data)
    return resp.status, await resp.read()


async def get(client: Client, server: SimServer, path: str):
    resp = await client.request("GET", f"127.0.0.1:{server.port}", path)
    return resp.status, await resp.read()


def sse_events(raw: bytes) -> list:
    events = [e[len(b"data: "):] for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


def metric(text: str, name: str, **labels) -> float:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        m = re.match(r"^([^{\s]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    raise AssertionError(f"{name} {labels} not in metrics")


async def started(**kw) -> SimServer:
    return await SimServer(kw.pop("config", FAST), model=MODEL, **kw).start()


def test_streaming_completion_sends_one_chunk_per_token_then_usage_and_done():
    async def main():
        server = await started()
        async with Client() as client:
            status, raw = await post(client, server, "/v1/completions", {
                "model": MODEL, "prompt": "Say something. " * 20, "max_tokens": 7, "stream": True,
                "stream_options": {"include_usage": True}})
        await server.close()
        return status, raw

    status, raw = run(main())
    assert status == 200
    events = sse_events(raw)
    tokens = [e for e in events if e["choices"]]
    assert len(tokens) == 7 and all(e["object"] == "text_completion" and e["model"] == MODEL for e in events)
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 6 + ["length"]
    assert all(len(e["choices"][0]["text"].encode()) == 4 for e in tokens)
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == []
    assert usage == {"prompt_tokens": 75, "completion_tokens": 7, "total_tokens": 82,  # 300 bytes = 75 tokens
                     "prompt_tokens_details": {"cached_tokens": 0}}


def test_chat_stream_starts_with_role_and_without_usage_unless_asked():
    async def main():
        server = await started()
        async with Client() as client:
            status, raw = await post(client, server, "/v1/chat/completions", {
                "model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_completion_tokens": 3, "stream": True})
        await server.close()
        return status, raw

    status, raw = run(main())
    events = sse_events(raw)
    assert status == 200 and all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [bool(e["choices"][0]["delta"]["content"]) for e in events[1:]] == [True, True, True]
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in e for e in events)


def test_repeated_chat_reports_cached_tokens_in_usage():
    messages = [{"role": "system", "content": "You are terse. " * 40}, {"role": "user", "content": "hello"}]

    async def main():
        server = await started()
        async with Client() as client:
            first = await post(client, server, "/v1/chat/completions",
                               {"model": MODEL, "messages": messages, "max_tokens": 2})
            second = await post(client, server, "/v1/chat/completions",
                                {"model": MODEL, "messages": messages, "max_tokens": 2})
        await server.close()
        return first, second

    (s1, b1), (s2, b2) = run(main())
    one, two = orjson.loads(b1), orjson.loads(b2)
    assert s1 == s2 == 200
    assert one["object"] == "chat.completion" and one["choices"][0]["message"]["role"] == "assistant"
    assert one["usage"]["completion_tokens"] == 2 and one["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    prompt = two["usage"]["prompt_tokens"]
    assert two["usage"]["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // 16 * 16 > 0


def test_without_max_tokens_the_length_is_seeded_and_ends_with_stop():
    async def one(seed):
        server = await started(seed=seed)
        async with Client() as client:
            _, raw = await post(client, server, "/v1/completions", {"prompt": "tell me a story"})
        await server.close()
        return orjson.loads(raw)

    a, b = run(one(3)), run(one(3))
    assert a["choices"][0]["finish_reason"] == "stop"
    assert a["usage"]["completion_tokens"] == b["usage"]["completion_tokens"] >= 1
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_metrics_carry_vllm_names_and_move_under_load():
    async def main():
        server = await started(loras=["sql-lora"])
        async with Client() as client:
            _, idle = await get(client, server, "/metrics")
            prompts = [f"request {i} " + "shared system prompt " * 30 for i in range(12)]
            calls = [asyncio.create_task(post(client, server, "/v1/completions",
                                              {"model": MODEL if i % 3 else "sql-lora", "prompt": p,
                                               "max_tokens": 300}))
                     for i, p in enumerate(prompts)]
            busy = None
            for _ in range(500):
                await asyncio.sleep(0.002)
                _, text = await get(client, server, "/metrics")
                if metric(text.decode(), "vllm:num_requests_running") > 0:
                    busy = text
                    break
            results = await asyncio.gather(*calls)
            _, after = await get(client, server, "/metrics")
        await server.close()
        return idle.decode(), busy.decode() if busy else None, after.decode(), results

    idle, busy, after, results = run(main())
    assert all(status == 200 for status, _ in results)
    assert metric(idle, "vllm:num_requests_running") == 0 and metric(idle, "vllm:kv_cache_usage_perc") == 0
    assert metric(idle, "vllm:cache_config_info", block_size="16", num_gpu_blocks="30517") == 1
    assert metric(idle, "vllm:lora_requests_info", max_lora="1", running_lora_adapters="") > 0
    assert busy is not None, "never saw a running request"
    assert metric(busy, "vllm:kv_cache_usage_perc") > 0
    assert metric(after, "vllm:num_requests_running") == 0 and metric(after, "vllm:num_requests_waiting") == 0
    assert metric(after, "vllm:request_success_total", finished_reason="length") == 12
    assert metric(after, "vllm:time_to_first_token_seconds_count") == 12
    assert metric(after, "vllm:e2e_request_latency_seconds_count") == 12
    assert metric(after, "vllm:generation_tokens_total") == 12 * 300
    assert metric(after, "vllm:prefix_cache_queries_total") > 0
    assert metric(after, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == 12


def test_models_lists_base_model_and_adapters_and_unknown_model_is_404():
    async def main():
        server = await started(loras=["sql-lora"])
        async with Client() as client:
            models = await get(client, server, "/v1/models")
            health = await get(client, server, "/health")
            unknown = await post(client, server, "/v1/completions", {"model": "gpt-x", "prompt": "hi"})
            lora = await post(client, server, "/v1/completions", {"model": "sql-lora", "prompt": "hi", "max_tokens": 1})
        await server.close()
        return models, health, unknown, lora

    models, health, unknown, lora = run(main())
    data = orjson.loads(models[1])["data"]
    assert [(m["id"], m["parent"]) for m in data] == [(MODEL, None), ("sql-lora", MODEL)]
    assert health[0] == 200
    assert unknown[0] == 404 and "The model `gpt-x` does not exist." in orjson.loads(unknown[1])["error"]["message"]
    assert lora[0] == 200 and orjson.loads(lora[1])["model"] == "sql-lora"


@pytest.mark.parametrize("path,body,status,message", [
    ("/v1/completions", b'{"prompt": "unterminated', 400, "body is not valid JSON"),
    ("/v1/completions", b'[1, 2]', 400, "body must be a JSON object"),
    ("/v1/completions", b'{"model": "sim-8b"}', 400, "'prompt' is required"),
    ("/v1/chat/completions", b'{"messages": "hi"}', 400, "'messages' must be a non-empty list"),
    ("/v1/chat/completions", b'{"messages": [{"content": "hi"}]}', 400, "'messages[0].role' is required"),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": 0}', 400, "'max_tokens' must be a positive integer"),
    ("/v1/completions", b'{"prompt": "hi", "stream": "yes"}', 400, "'stream' must be a boolean"),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": 200000}', 400, "maximum context length is 131072"),
])
def test_bad_requests_get_400_naming_the_field(path, body, status, message):
    async def main():
        server = await started()
        async with Client() as client:
            result = await post(client, server, path, body)
            _, metrics = await get(client, server, "/metrics")
        await server.close()
        return result, metrics.decode()

    (code, raw), metrics = run(main())
    assert code == status
    err = orjson.loads(raw)["error"]
    assert message in err["message"] and err["code"] == status
    assert metric(metrics, "vllm:prefix_cache_queries_total") == 0  # nothing reached the engine


def test_two_servers_in_one_process_have_separate_engines():
    async def main():
        a, b = await serve(FAST, servers=2, port=0, model=MODEL)
        async with Client() as client:
            await post(client, a, "/v1/completions", {"prompt": "only to a", "max_tokens": 3})
            _, ma = await get(client, a, "/metrics")
            _, mb = await get(client, b, "/metrics")
        await a.close()
        await b.close()
        return a.port, b.port, ma.decode(), mb.decode()

    pa, pb, ma, mb = run(main())
    assert pa != pb
    assert metric(ma, "vllm:request_success_total", finished_reason="length") == 1
    assert metric(mb, "vllm:request_success_total", finished_reason="length") == 0


def test_cli_serves_n_servers_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mlplane.cli.serve_sim", "--port", "0", "--servers", "2",
                             "--model", MODEL, "--time-scale", "0.01"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        urls = [re.fullmatch(rf"serving {MODEL} on (http://127\.0\.0\.1:\d+)", line).group(1) for line in lines]

        async def main():
            async with Client() as client:
                out = []
                for url in urls:
                    resp = await client.request("POST", url[len("http://"):], "/v1/completions",
                                                body=b'{"prompt": "hi", "max_tokens": 2}')
                    out.append((resp.status, orjson.loads(await resp.read())["usage"]["completion_tokens"]))
                return out

        assert run(main()) == [(200, 2), (200, 2)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_config_naming_the_key(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("max_num_seqs: 8\nprefil_token_s: 0.001\n")
    proc = subprocess.run([sys.executable, "-m", "mlplane.cli.serve_sim", "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "unknown key 'prefil_token_s'" in proc.stderr and str(cfg) in proc.stderr


def test_probe_endpoints_of_peer_routers_and_tokenize():
    async def main():
        server = await started()
        async with Client() as client:
            out = {p: await get(client, server, p) for p in ("/get_model_info", "/model_info", "/get_server_info",
                                                             "/server_info", "/health_generate", "/version")}
            out["tokenize"] = await post(client, server, "/tokenize", {"model": MODEL, "prompt": "abcdefgh"})
            out["missing"] = await get(client, server, "/nope")
        await server.close()
        return out

    out = run(main())
    assert all(out[p][0] == 200 for p in out if p != "missing") and out["missing"][0] == 404
    assert orjson.loads(out["/get_model_info"][1])["model_path"] == MODEL
    assert orjson.loads(out["/get_server_info"][1])["page_size"] == 16
    tok = orjson.loads(out["tokenize"][1])
    assert tok["count"] == 2 and len(tok["tokens"]) == 2 and tok["max_model_len"] == 131072


@pytest.mark.parametrize("peer", PEERS)  # with the command lines `mlplane bench traffic` uses
def test_streams_through_peer_routers(peer):
    async def main():
        servers = await serve(FAST, servers=2, port=0, model=MODEL)
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            *router_argv(peer, port, [s.url for s in servers]), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            async with Client() as client:
                for _ in range(300):
                    try:
                        resp = await client.request("GET", f"127.0.0.1:{port}", "/health", timeout=1)
                        await resp.read()
                        if resp.status == 200:
                            break
                    except Exception:  # noqa: BLE001 - not listening yet
                        pass
                    await asyncio.sleep(0.05)
                results = []
                for path, body in (("/v1/completions", {"model": MODEL, "prompt": "hello " * 50}),
                                   ("/v1/chat/completions", {"model": MODEL,
                                                             "messages": [{"role": "user", "content": "hi"}]})):
                    resp = await client.request("POST", f"127.0.0.1:{port}", path,
                                                headers={"content-type": "application/json"},
                                                body=orjson.dumps({**body, "max_tokens": 5, "stream": True}))
                    results.append((resp.status, await resp.read()))
                served = [metric(s.metrics_text().decode(), "vllm:request_success_total",
                                 finished_reason="length") for s in servers]
            return results, served
        finally:
            proc.terminate()
            await proc.wait()
            for s in servers:
                await s.close()

    results, served = run(main())
    for status, raw in results:
        assert status == 200
        events = sse_events(raw)
        assert sum(1 for e in events if e["choices"] and (e["choices"][0].get("text") or
                                                          e["choices"][0].get("delta", {}).get("content"))) == 5
    assert sum(served) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_client_that_goes_away_aborts_its_request(stream):
    async def main():
        server = await started(config=EngineConfig(time_scale=1.0))  # real time: the request is still running
        body = orjson.dumps({"prompt": "x" * 400, "max_tokens": 1000, "stream": stream})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        for _ in range(200):
            await asyncio.sleep(0.005)
            if server.engine.num_running:
                break
        writer.close()
        for _ in range(400):
            await asyncio.sleep(0.005)
            if not server.engine.has_work():
                break
        text = server.metrics_text().decode()
        await server.close()
        return text

    text = run(main())
    assert metric(text, "vllm:request_success_total", finished_reason="abort") == 1
    assert metric(text, "vllm:num_requests_running") == 0 and metric(text, "vllm:kv_cache_usage_perc") == 0
