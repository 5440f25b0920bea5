"""The simulator's HTTP front end: vLLM's OpenAI API and Prometheus metrics over one engine each,
driven in real time on asyncio.

Each ``SimServer`` owns an ``Engine`` and a loop task. The task runs engine steps back to back in
virtual time and sleeps until the simulated GPU would have finished them (virtual seconds x
``time_scale``). To stay cheap it runs several short steps per wake-up (up to ``tick`` real seconds
ahead) and writes the tokens they produced to each stream in one chunk; a step that produces a
first token or finishes a request ends the batch early so TTFT and end-to-end times are exact to
the step. Requests that arrive meanwhile join at the next step boundary, as in vLLM. A request
whose client goes away is aborted and its KV blocks freed.

Endpoints: POST /v1/completions, /v1/chat/completions (stream or not), GET /v1/models, /health,
/metrics, /version, and what the sglang and vLLM routers probe (/get_model_info, /get_server_info,
/health_generate). Prompts are tokenized as 4 UTF-8 bytes per token (llm-d's estimate), chat
messages flattened through a fixed template first. Metric times are in simulated seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

import orjson
import xxhash

from mlplane.modelserver.config import DEFAULT_MODEL, EngineConfig
from mlplane.modelserver.engine import (BYTES_PER_TOKEN, Engine, RequestError, SimRequest,
                                        block_hashes_of_ids, block_hashes_of_text, output_length,
                                        prompt_tokens_of_text)
from mlplane.net.http import Request, Response, StreamResponse, start_server

log = logging.getLogger(__name__)

VERSION = "0.11.0"  # the vLLM version whose API and metric names are simulated
TICK_S = 0.003  # real seconds of steps run per wake-up of a server's loop

# Output tokens are 4-byte words cycled from this list (JSON-safe, so they go into JSON verbatim).
WORDS = [w.encode() for w in (
    " the", " and", " for", " you", " was", " not", " are", " but", " one", " all", " can", " her",
    " had", " use", " how", " its", " our", " out", " day", " get", " has", " him", " his", " new",
    " now", " old", " see", " two", " way", " who", " did", " set")]


class BadRequest(Exception):
    """A request the API refuses: ``status`` and a message naming the field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


def _json_object(request: Request) -> dict:
    """The request body as a JSON object; BadRequest when it is not one."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    return body


def error(status: int, message: str, param: str | None = None) -> Response:
    kind = {400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowed"}.get(status, "InternalServerError")
    return Response(status, orjson.dumps({"error": {"message": message, "type": kind, "param": param,
                                                    "code": status}}))


@dataclass(slots=True)
class Parsed:
    """What a completions or chat request asks for."""

    model: str
    lora: str | None
    text: bytes | None  # prompt text (None when given as token ids)
    ids: list[int] | None
    max_tokens: int | None
    stream: bool
    include_usage: bool


def _flatten_messages(messages: object) -> bytes:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"'messages[{i}]' must be an object", param="messages")
        role = m.get("role")
        if not isinstance(role, str):
            raise BadRequest(f"'messages[{i}].role' is required and must be a string", param="messages")
        content = m.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise BadRequest(f"'messages[{i}].content[{j}]' must be an object", param="messages")
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            text = "".join(parts)
        else:
            raise BadRequest(f"'messages[{i}].content' must be a string or a list of parts", param="messages")
        out.append(f"<|{role}|>\n{text}\n")
    out.append("<|assistant|>\n")
    return "".join(out).encode()


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SimServer:
    """One simulated vLLM server: an engine, its loop task and an HTTP listener."""

    def __init__(self, config: EngineConfig | None = None, *, model: str = DEFAULT_MODEL,
                 loras: list[str] | tuple[str, ...] = (), seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 tick: float = TICK_S):
        self.config = config or EngineConfig()
        self.engine = Engine(self.config)
        self.model = model
        self.loras = list(dict.fromkeys(loras))
        self.seed = seed
        self.host = host
        self.port = port
        self.tick = tick
        self.created = int(time.time())
        self._server = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._t0 = 0.0
        self._clock = 0.0  # virtual time at which the engine's next step starts
        self._outs: dict[SimRequest, _Out] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> "SimServer":
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._t0 = self._loop.time()
        self._server = await start_server(self.handle, self.host, self.port)
        self.port = self._server.port
        self._task = asyncio.create_task(self._run(), name=f"serve-sim:{self.port}")
        self._task.add_done_callback(self._loop_ended)
        return self

    def _loop_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("serve-sim on port %d: engine loop failed", self.port, exc_info=task.exception())
            for out in list(self._outs.values()):
                out.finish()  # streams end without [DONE]; waiting requests get what was generated
            self._outs.clear()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for out in self._outs.values():
            out.finish()
        self._outs.clear()

    # --- the real-time loop -------------------------------------------------------------------

    def _vnow(self) -> float:
        return (self._loop.time() - self._t0) / self.config.time_scale

    async def _run(self) -> None:
        engine = self.engine
        scale = self.config.time_scale
        loop = self._loop
        while True:
            if not engine.has_work():
                self._wake.clear()
                await self._wake.wait()
                self._clock = max(self._clock, self._vnow())
                continue
            horizon = self._clock + self.tick / scale
            touched: dict[SimRequest, None] = {}
            finished: list[SimRequest] = []
            while engine.has_work():
                result = engine.step(self._clock)
                self._clock += result.duration
                urgent = bool(result.finished)
                for req in result.emitted:
                    touched[req] = None
                    if req.output_tokens == 1:
                        urgent = True
                finished.extend(result.finished)
                if urgent or self._clock >= horizon:
                    break
            delay = self._t0 + self._clock * scale - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for req in touched:
                out = self._outs.get(req)
                if out is not None:
                    out.tokens(req)
            for req in finished:
                out = self._outs.pop(req, None)
                if out is not None:
                    out.finish()

    def _submit(self, req: SimRequest, out: "_Out") -> None:
        """Queue a request in the engine (raises RequestError) and wake the loop."""
        if not self.engine.has_work():
            self._clock = max(self._clock, self._vnow())
        self.engine.add(req, max(self._vnow(), 0.0))
        self._outs[req] = out
        self._wake.set()

    def _abort(self, req: SimRequest) -> None:
        self._outs.pop(req, None)
        self.engine.abort(req)

    # --- HTTP ---------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | StreamResponse:
        path, method = request.path, request.method
        try:
            if path == "/tokenize" and method == "POST":
                return self._tokenize(request)
            if path == "/v1/completions" or path == "/v1/chat/completions":
                if method != "POST":
                    return error(405, f"method {method} not allowed on {path}; use POST")
                return await self._generate(request, chat=path == "/v1/chat/completions")
            if method not in ("GET", "HEAD"):
                if path in ("/health", "/metrics", "/v1/models"):
                    return error(405, f"method {method} not allowed on {path}; use GET")
                return error(404, f"no route for {method} {path}")
            if path == "/health" or path == "/health_generate" or path == "/ping":
                return Response(200, b"", content_type=None)
            if path == "/metrics":
                return Response(200, self.metrics_text(), content_type="text/plain; version=0.0.4; charset=utf-8")
            if path == "/v1/models":
                return Response(200, orjson.dumps(self.models()))
            if path == "/version":
                return Response(200, orjson.dumps({"version": VERSION}))
            if path == "/get_model_info" or path == "/model_info":
                return Response(200, orjson.dumps({"model_path": self.model, "tokenizer_path": self.model,
                                                   "is_generation": True}))
            if path == "/get_server_info" or path == "/server_info":
                c = self.config
                return Response(200, orjson.dumps({
                    "model_path": self.model, "served_model_name": self.model, "version": VERSION,
                    "max_total_num_tokens": c.num_gpu_blocks * c.block_size, "page_size": c.block_size,
                    "max_running_requests": c.max_num_seqs, "chunked_prefill_size": c.max_num_batched_tokens,
                    "context_length": c.max_model_len, "max_loras_per_batch": c.max_loras,
                    "lora_paths": self.loras}))
            return error(404, f"no route for {method} {path}")
        except BadRequest as e:
            return error(e.status, str(e), e.param)

    def _tokenize(self, request: Request) -> Response:
        """vLLM's /tokenize: the simulator's tokens are the prompt's 4-byte groups read as integers."""
        body = _json_object(request)
        if "messages" in body:
            text = _flatten_messages(body["messages"])
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"].encode()
        else:
            raise BadRequest("'prompt' (a string) or 'messages' is required", param="prompt")
        padded = text + b"\0" * (-len(text) % BYTES_PER_TOKEN)
        tokens = [int.from_bytes(padded[i:i + BYTES_PER_TOKEN], "little")
                  for i in range(0, len(padded), BYTES_PER_TOKEN)]
        return Response(200, orjson.dumps({"count": len(tokens), "max_model_len": self.config.max_model_len,
                                           "tokens": tokens, "token_strs": None}))

    def models(self) -> dict:
        c = self.config
        data = [{"id": self.model, "object": "model", "created": self.created, "owned_by": "vllm",
                 "root": self.model, "parent": None, "max_model_len": c.max_model_len}]
        for name in self.loras:
            data.append({"id": name, "object": "model", "created": self.created, "owned_by": "vllm",
                         "root": name, "parent": self.model, "max_model_len": c.max_model_len})
        return {"object": "list", "data": data}

    def _parse(self, request: Request, chat: bool) -> Parsed:
        body = _json_object(request)
        model = body.get("model")
        if model is None:
            model = self.model
        elif not isinstance(model, str):
            raise BadRequest("'model' must be a string", param="model")
        if model == self.model:
            lora = None
        elif model in self.loras:
            lora = model
        else:
            raise BadRequest(f"The model `{model}` does not exist.", status=404, param="model")
        text = ids = None
        if chat:
            text = _flatten_messages(body.get("messages"))
        else:
            if "prompt" not in body:
                raise BadRequest("'prompt' is required", param="prompt")
            prompt = body["prompt"]
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
                prompt = prompt[0]
            if isinstance(prompt, str):
                text = prompt.encode()
            elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
                ids = prompt
            elif isinstance(prompt, list) and len(prompt) > 1:
                raise BadRequest("'prompt' with several prompts is not supported; send one request per prompt",
                                 param="prompt")
            else:
                raise BadRequest("'prompt' must be a string or a list of token ids", param="prompt")
        max_tokens = body.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise BadRequest(f"'max_tokens' must be a positive integer, got {max_tokens!r}", param="max_tokens")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict):
            raise BadRequest("'stream_options' must be an object", param="stream_options")
        n = body.get("n", 1)
        if n not in (1, None):
            raise BadRequest("'n' other than 1 is not supported by the simulator", param="n")
        return Parsed(model, lora, text, ids, max_tokens, stream, bool(opts.get("include_usage")))

    async def _generate(self, request: Request, chat: bool) -> Response | StreamResponse:
        p = self._parse(request, chat)
        c = self.config
        if p.text is not None:
            prompt_tokens = prompt_tokens_of_text(p.text)
            hashes = block_hashes_of_text(p.text, c.block_size, p.lora) if c.enable_prefix_caching else []
            key = p.text
        else:
            prompt_tokens = len(p.ids)
            hashes = block_hashes_of_ids(p.ids, c.block_size, p.lora) if c.enable_prefix_caching else []
            key = orjson.dumps(p.ids)
        if p.max_tokens is None:
            limit = max(1, c.max_model_len - prompt_tokens)
            max_tokens, reason = output_length(self.seed, key, c.mean_output_tokens, limit), "stop"
        else:
            max_tokens, reason = p.max_tokens, "length"
        rid = request.headers.get("x-request-id") or f"{self.port}-{next(self._ids)}"
        rid = ("chatcmpl-" if chat else "cmpl-") + rid
        req = SimRequest(rid, prompt_tokens, max_tokens, hashes, lora=p.lora, finish_reason=reason)
        start = xxhash.xxh32_intdigest(key, seed=self.seed & 0xFFFFFFFF) % len(WORDS)
        out = _Out(self, req, p, chat, start, int(time.time()))
        try:
            self._submit(req, out)
        except RequestError as e:
            raise BadRequest(str(e), param="max_tokens" if p.max_tokens else "prompt") from None
        if p.stream:
            return StreamResponse(200, out.stream(), headers={"Cache-Control": "no-cache"})
        done = out.waiter = asyncio.get_running_loop().create_future()
        gone = asyncio.ensure_future(request.disconnected.wait())
        try:
            await asyncio.wait((done, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not done.done():  # the client went away (or the server is closing): stop generating
                self._abort(req)
        if not out.done:
            return error(500, "the request was aborted")
        return Response(200, out.body())

    # --- metrics ------------------------------------------------------------------------------

    def metrics_text(self) -> bytes:
        e = self.engine
        s = e.stats
        c = self.config
        lbl = f'engine="0",model_name="{self.model}"'
        lines = []

        def metric(name: str, kind: str, help_: str, value: float, labels: str = lbl) -> None:
            lines.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name}{{{labels}}} {float(value)}")

        metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", e.num_running)
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", e.num_waiting)
        metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage())
        metric("vllm:prefix_cache_queries_total", "counter",
               "Prefix cache queries, in terms of number of queried tokens.", s.prefix_queries)
        metric("vllm:prefix_cache_hits_total", "counter",
               "Prefix cache hits, in terms of number of cached tokens.", s.prefix_hits)
        metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemption from the engine.",
               s.preemptions)
        metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", s.prompt_tokens)
        metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
               s.generation_tokens)
        rows = [f'vllm:request_success_total{{{lbl},finished_reason="{r}"}} {float(s.aborted if r == "abort" else s.success.get(r, 0))}'
                for r in ("stop", "length", "abort")]
        lines.append("# HELP vllm:request_success_total Count of successfully processed requests.\n"
                     "# TYPE vllm:request_success_total counter\n" + "\n".join(rows))
        lines.append(
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{block_size="{c.block_size}",enable_prefix_caching="{c.enable_prefix_caching}",'
            f'engine="0",num_gpu_blocks="{c.num_gpu_blocks}"}} 1.0')
        if self.loras:
            lines.append(
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
                "# TYPE vllm:lora_requests_info gauge\n"
                f'vllm:lora_requests_info{{max_lora="{c.max_loras}",'
                f'running_lora_adapters="{",".join(sorted(e.running_loras()))}",'
                f'waiting_lora_adapters="{",".join(sorted(e.waiting_loras()))}"}} {time.time()}')
        for name, hist, help_ in (
                ("vllm:time_to_first_token_seconds", s.ttft, "Histogram of time to first token in seconds."),
                ("vllm:e2e_request_latency_seconds", s.e2e, "Histogram of e2e request latency in seconds."),
                ("vllm:inter_token_latency_seconds", s.itl, "Histogram of inter-token latency in seconds."),
                ("vllm:request_queue_time_seconds", s.queue_time,
                 "Histogram of time spent in WAITING phase for request.")):
            rows = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
            cum = 0
            for bound, count in zip(hist.bounds, hist.counts):
                cum += count
                rows.append(f'{name}_bucket{{{lbl},le="{bound}"}} {float(cum)}')
            rows.append(f'{name}_bucket{{{lbl},le="+Inf"}} {float(hist.count)}')
            rows.append(f"{name}_count{{{lbl}}} {float(hist.count)}")
            rows.append(f"{name}_sum{{{lbl}}} {hist.sum}")
            lines.append("\n".join(rows))
        return ("\n".join(lines) + "\n").encode()


class _Out:
    """Where one request's tokens go: SSE chunks for a stream, a waiter for a whole response."""

    __slots__ = ("server", "req", "chat", "stream_mode", "include_usage", "model", "created", "start", "sent",
                 "buf", "waiter", "done", "_prefix", "_suffix", "_role")

    def __init__(self, server: SimServer, req: SimRequest, p: Parsed, chat: bool, start: int, created: int):
        self.server = server
        self.req = req
        self.chat = chat
        self.stream_mode = p.stream
        self.include_usage = p.include_usage
        self.model = p.model
        self.created = created
        self.start = start
        self.sent = 0  # tokens written to the stream
        self.buf: list[bytes] = []
        self.waiter: asyncio.Future | None = None
        self.done = False
        head = orjson.dumps({"id": req.id, "object": "chat.completion.chunk" if chat else "text_completion",
                             "created": created, "model": p.model})[:-1]
        if chat:
            self._prefix = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":"'
            self._suffix = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
            # vLLM sends the role first, once the first token is out
            self._role = b"data: " + head + (b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                                             b'"logprobs":null,"finish_reason":null}]}\n\n')
        else:
            self._role = b""
            self._prefix = b"data: " + head + b',"choices":[{"index":0,"text":"'
            self._suffix = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'

    def usage(self) -> dict:
        r = self.req
        return {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens + r.output_tokens,
                "completion_tokens": r.output_tokens, "prompt_tokens_details": {"cached_tokens": r.cached_tokens}}

    def _text(self, first: int, last: int) -> bytes:
        n = len(WORDS)
        return b"".join(WORDS[(self.start + i) % n] for i in range(first, last))

    def tokens(self, req: SimRequest) -> None:
        """New tokens were generated (called after each batch of steps)."""
        if not self.stream_mode:
            return
        upto = req.output_tokens
        if req.finished:
            upto -= 1  # the last token goes out with finish_reason in finish()
        if self._role:
            self.buf.append(self._role)
            self._role = b""
        n = len(WORDS)
        pre, suf, start = self._prefix, self._suffix, self.start
        for i in range(self.sent, upto):
            self.buf.append(pre + WORDS[(start + i) % n] + suf)
        self.sent = max(self.sent, upto)
        self._wake()

    def finish(self) -> None:
        """The request finished (or the server is closing)."""
        if self.done:
            return
        self.done = True
        req = self.req
        if self.stream_mode and req.finished and not req.aborted:
            if self._role:
                self.buf.append(self._role)
                self._role = b""
            last = self._text(self.sent, req.output_tokens).decode()
            self.sent = req.output_tokens
            head = {"id": req.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created, "model": self.model}
            if self.chat:
                choice = {"index": 0, "delta": {"content": last}, "logprobs": None,
                          "finish_reason": req.finish_reason}
            else:
                choice = {"index": 0, "text": last, "logprobs": None, "finish_reason": req.finish_reason,
                          "stop_reason": None}
            self.buf.append(b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n")
            if self.include_usage:
                self.buf.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": self.usage()}) + b"\n\n")
            self.buf.append(b"data: [DONE]\n\n")
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def stream(self):
        try:
            while True:
                if self.buf:
                    data = b"".join(self.buf)
                    self.buf.clear()
                    yield data
                    continue
                if self.done:
                    return
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
        finally:
            if not self.done:
                self.done = True
                self.server._abort(self.req)

    def body(self) -> bytes:
        req = self.req
        text = self._text(0, req.output_tokens).decode()
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                      "logprobs": None, "finish_reason": req.finish_reason, "stop_reason": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": req.finish_reason,
                      "stop_reason": None, "prompt_logprobs": None}
            obj = "text_completion"
        return orjson.dumps({"id": req.id, "object": obj, "created": self.created, "model": self.model,
                             "choices": [choice], "usage": self.usage()})


async def serve(config: EngineConfig, *, servers: int = 1, host: str = "127.0.0.1", port: int = 8000,
                model: str = DEFAULT_MODEL, loras: list[str] | tuple[str, ...] = (), seed: int = 0) -> list[SimServer]:
    """Start ``servers`` simulated servers on consecutive ports from ``port`` (0: each from the OS)."""
    started: list[SimServer] = []
    try:
        for i in range(servers):
            s = SimServer(config, model=model, loras=loras, seed=seed, host=host, port=port + i if port else 0)
            started.append(await s.start())
    except BaseException:
        for s in started:
            await s.close()
        raise
    return started
