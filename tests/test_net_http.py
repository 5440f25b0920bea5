"""The traffic plane's HTTP/1.1 layer (mlplane.net.http): a real server and client on 127.0.0.1 sockets.

Each test runs under both the plain asyncio loop and uvloop. Raw-socket tests check the wire format
(pipelining, chunked request bodies, malformed input) where the client would hide it.
"""

import asyncio
import socket

import orjson
import pytest
import uvloop

from mlplane.net.http import (
    Client,
    ConnectError,
    Request,
    Response,
    ResponseError,
    StreamResponse,
    json_response,
    run,
    start_server,
)

LIMIT = 10.0  # seconds any one test may take before it is failed as hung


@pytest.fixture(params=["asyncio", "uvloop"])
def arun(request):
    """Run a coroutine to completion on a fresh loop of the parametrised kind, failing it if it hangs."""

    def runner(coro):
        async def bounded():
            return await asyncio.wait_for(coro, LIMIT)

        if request.param == "uvloop":
            return uvloop.run(bounded())
        return asyncio.run(bounded())

    return runner


async def echo(req: Request) -> Response:
    return json_response(200, {"method": req.method, "path": req.path, "query": req.query,
                               "headers": req.headers, "body": req.body.decode("latin-1"), "client": req.client})


def addr(server) -> str:
    return f"127.0.0.1:{server.port}"


async def read_raw_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One Content-Length-framed response from a raw socket."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- round trips and connection reuse ---------------------------------------------------------------------------


def test_get_and_post_round_trip(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("GET", addr(server), "/v1/models?x=1&y=2", headers={"X-Trace": "abc"})
            assert r.status == 200
            assert r.headers["content-type"] == "application/json"
            got = await r.json()
            assert got["method"] == "GET" and got["path"] == "/v1/models" and got["query"] == "x=1&y=2"
            assert got["headers"]["x-trace"] == "abc"  # names arrive lower-case
            assert got["client"].startswith("127.0.0.1:")

            body = orjson.dumps({"model": "m", "prompt": "hi"})
            r = await client.request("POST", addr(server), "/v1/completions", body=body,
                                     headers=[("Content-Type", "application/json")])
            got = await r.json()
            assert got["method"] == "POST" and got["body"] == body.decode()
            assert got["headers"]["content-length"] == str(len(body))
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_keep_alive_reuses_one_connection(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        client = Client()
        try:
            for i in range(20):
                r = await client.request("POST", addr(server), f"/n/{i}", body=b"x" * i)
                assert (await r.json())["path"] == f"/n/{i}"
            assert server.accepted == 1
            assert client.connects == 1
            assert client.idle_connections(addr(server)) == 1
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_idle_pool_is_bounded(arun):
    async def main():
        gate = asyncio.Event()
        arrived = 0

        async def handler(req):
            nonlocal arrived
            arrived += 1
            if arrived == 5:
                gate.set()
            await gate.wait()
            return Response(200, b"ok", content_type="text/plain")

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client(max_idle_per_host=2)
        try:
            responses = await asyncio.gather(*(client.request("GET", addr(server), "/") for _ in range(5)))
            assert [await r.read() for r in responses] == [b"ok"] * 5
            assert client.connects == 5
            assert client.idle_connections(addr(server)) == 2
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_pipelined_requests_are_answered_in_order(arun):
    async def main():
        release_first = asyncio.Event()

        async def handler(req):
            if req.path == "/first":
                await release_first.wait()  # the first answer is the slowest to produce
            return Response(200, req.path.encode(), content_type="text/plain")

        server = await start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
                         b"POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                         b"GET /third HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            release_first.set()
            bodies = [(await read_raw_response(reader))[2] for _ in range(3)]
            assert bodies == [b"/first", b"/second", b"/third"]
            assert server.accepted == 1
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_connection_close_is_honoured(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("GET", addr(server), "/", headers={"Connection": "close"})
            assert r.headers["connection"] == "close"
            await r.read()
            assert client.idle_connections() == 0  # not pooled

            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            status, headers, _ = await read_raw_response(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await reader.read() == b""  # the server closed the connection
            writer.close()
        finally:
            await client.aclose()
            await server.close()

    arun(main())


# --- request and response bodies ----------------------------------------------------------------------------------


def test_chunked_request_body(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n")
            await writer.drain()
            writer.write(b"6\r\n world\r\n0\r\n\r\n")
            status, _, body = await read_raw_response(reader)
            assert status == 200
            assert orjson.loads(body)["body"] == "hello world"
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_five_megabyte_body_both_ways(arun):
    async def main():
        async def mirror(req):
            return Response(200, req.body, content_type="application/octet-stream")

        server = await start_server(mirror, "127.0.0.1", 0)
        client = Client()
        try:
            payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
            r = await client.request("POST", addr(server), "/mirror", body=payload)
            assert r.status == 200
            assert int(r.headers["content-length"]) == len(payload)
            assert await r.read() == payload
            # the same connection serves the next request after a large body
            r = await client.request("POST", addr(server), "/mirror", body=b"small")
            assert await r.read() == b"small"
            assert server.accepted == 1
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_body_over_the_limit_gets_413(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0, max_body=1000)
        default = await start_server(echo, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", addr(server), "/v1/completions", body=b"x" * 1000)
            assert r.status == 200  # exactly the limit is fine
            await r.read()
            r = await client.request("POST", addr(server), "/v1/completions", body=b"x" * 1001)
            assert r.status == 413
            assert "1000 bytes" in (await r.json())["error"]["message"]

            # a chunked body that grows past the limit
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"200\r\n" + b"y" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n")
            status, headers, _ = await read_raw_response(reader)
            assert status == 413 and headers["connection"] == "close"
            writer.close()

            # the default limit is 64 MiB: a declared length just above it is refused before any body is sent
            reader, writer = await asyncio.open_connection("127.0.0.1", default.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 * 1024 + 1))
            status, _, body = await read_raw_response(reader)
            assert status == 413 and b"67108864 bytes" in body
            writer.close()
        finally:
            await client.aclose()
            await server.close()
            await default.close()

    arun(main())


def test_malformed_request_gets_400(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n")
            status, headers, body = await read_raw_response(reader)
            assert status == 400 and headers["connection"] == "close"
            assert orjson.loads(body)["error"]["message"].startswith("malformed HTTP request")
            assert await reader.read() == b""
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_handler_exception_gets_500_and_server_keeps_serving(arun):
    async def main():
        async def handler(req):
            if req.path == "/boom":
                raise RuntimeError("kaput")
            if req.path == "/wrong":
                return {"not": "a response"}
            if req.path == "/bad-body":
                return Response(200, 12345)
            if req.path == "/bad-stream-head":
                return StreamResponse(200, tokens(), headers=7)
            return Response(200, b"fine", content_type="text/plain", headers={"X-Arrow": "a\u2192b"})

        async def tokens():
            yield b"never sent"

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("GET", addr(server), "/boom")
            assert r.status == 500
            error = (await r.json())["error"]
            assert "RuntimeError: kaput" in error["message"] and error["code"] == 500
            r = await client.request("GET", addr(server), "/wrong")
            assert r.status == 500
            assert "not a Response" in (await r.json())["error"]["message"]
            r = await client.request("GET", addr(server), "/bad-body")
            assert r.status == 500 and "TypeError" in (await r.json())["error"]["message"]
            r = await client.request("GET", addr(server), "/bad-stream-head")
            assert r.status == 500 and "TypeError" in (await r.json())["error"]["message"]
            r = await client.request("GET", addr(server), "/ok")
            assert r.status == 200 and await r.read() == b"fine"
            assert r.headers["x-arrow"] == "a\u2192b".encode().decode("latin-1")  # non-latin-1 goes out as UTF-8
            assert server.accepted == 1  # the same connection went on
        finally:
            await client.aclose()
            await server.close()

    arun(main())


# --- streaming -------------------------------------------------------------------------------------------------


def test_stream_chunks_arrive_one_by_one(arun):
    async def main():
        produced = []
        proceed = [asyncio.Event() for _ in range(3)]

        async def handler(req):
            async def tokens():
                for i in range(3):
                    if i:
                        await proceed[i].wait()  # chunk i is produced only after the client saw chunk i-1
                    produced.append(i)
                    yield b"data: %d\n\n" % i
                yield b"data: [DONE]\n\n"

            return StreamResponse(200, tokens(), headers={"X-Request-Id": "r1"})

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", addr(server), "/v1/completions", body=b"{}")
            assert r.status == 200
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.headers["x-request-id"] == "r1"
            seen = []
            async for chunk in r.iter_chunks():
                seen.append(chunk)
                n = len(seen)
                if n < 3:
                    assert produced == list(range(n))  # the server has not produced the next chunk yet
                    proceed[n].set()
            assert seen == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
            # the connection is reused after a streamed body
            r = await client.request("GET", addr(server), "/again")
            assert await r.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
            assert server.accepted == 1
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_client_disconnect_mid_stream_closes_the_iterator(arun):
    async def main():
        closed = asyncio.Event()
        requests = []

        async def handler(req):
            requests.append(req)

            async def tokens():
                try:
                    yield b"data: first\n\n"
                    await asyncio.Event().wait()  # the model would go on generating
                    yield b"never"
                finally:
                    closed.set()

            return StreamResponse(200, tokens())

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", addr(server), "/v1/completions", body=b"{}")
            chunks = r.iter_chunks()
            assert await chunks.__anext__() == b"data: first\n\n"
            r.close()  # the client goes away mid-stream
            await closed.wait()
            await requests[0].disconnected.wait()
            assert client.idle_connections() == 0
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_disconnected_is_set_for_a_waiting_handler(arun):
    async def main():
        noticed = asyncio.Event()
        started = asyncio.Event()

        async def handler(req):
            started.set()
            await req.disconnected.wait()
            noticed.set()
            return Response(200)

        server = await start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            await started.wait()
            writer.close()
            await noticed.wait()
        finally:
            await server.close()

    arun(main())


def test_iter_chunks_applies_backpressure(arun):
    async def main():
        produced = 0
        total = 400  # 400 x 64 KiB = 25 MiB, far more than the socket and client buffers hold

        async def handler(req):
            async def big():
                nonlocal produced
                for _ in range(total):
                    produced += 1
                    yield b"z" * 65536

            return StreamResponse(200, big(), content_type="application/octet-stream")

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("GET", addr(server), "/big")
            chunks = r.iter_chunks()
            await chunks.__anext__()
            # Give the server every chance to run ahead while the consumer stalls: it must stay bounded.
            for _ in range(200):
                await asyncio.sleep(0)
            stalled_at = produced
            assert stalled_at < total
            received = 65536
            async for chunk in chunks:
                received += len(chunk)
            assert produced == total
            assert received == total * 65536
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_stream_waits_for_a_slow_reader(arun):
    async def main():
        produced = 0
        total = 400  # 400 x 64 KiB = 25 MiB, far more than the socket buffers between the two ends hold

        async def handler(req):
            async def big():
                nonlocal produced
                for _ in range(total):
                    produced += 1
                    yield b"z" * 65536

            return StreamResponse(200, big(), content_type="application/octet-stream")

        server = await start_server(handler, "127.0.0.1", 0)
        try:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a reader with a small window
            sock.connect(("127.0.0.1", server.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=65536)
            writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            while produced == 0:
                await asyncio.sleep(0)
            # Without flow control the generator would run to its end in one go (it never awaits).
            for _ in range(200):
                await asyncio.sleep(0)
            assert produced < total
            tail = b""
            while not tail.endswith(b"\r\n0\r\n\r\n"):  # the last chunk
                data = await reader.read(1 << 20)
                assert data, "connection closed before the end of the stream"
                tail = (tail + data)[-16:]
            assert produced == total
            writer.close()
        finally:
            await server.close()

    arun(main())


# --- client failures --------------------------------------------------------------------------------------------


def test_connect_error_on_a_closed_port(arun):
    async def main():
        client = Client()
        port = free_port()
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
            await client.request("GET", f"127.0.0.1:{port}", "/")
        with pytest.raises(ValueError, match="not host:port"):
            await client.request("GET", "nohostport", "/")
        await client.aclose()

    arun(main())


def test_stale_pooled_connection_is_retried_transparently(arun):
    async def main():
        accepted = 0

        async def flaky(reader, writer):
            # The first connection answers one request, then closes as the second one arrives (as a server
            # whose keep-alive timeout fires at that moment would); later connections answer normally.
            nonlocal accepted
            accepted += 1
            first = accepted == 1
            answered = 0
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    if first and answered == 1:
                        writer.close()
                        return
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    answered += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        raw = await asyncio.start_server(flaky, "127.0.0.1", 0)
        address = f"127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        client = Client()
        try:
            r = await client.request("GET", address, "/one")
            assert await r.read() == b"ok"
            assert client.idle_connections(address) == 1
            r = await client.request("GET", address, "/two")  # goes out on the pooled connection, which dies
            assert r.status == 200 and await r.read() == b"ok"
            assert accepted == 2 and client.connects == 2
        finally:
            await client.aclose()
            raw.close()

    arun(main())


def test_fresh_connection_closed_before_any_byte_is_a_connect_error(arun):
    async def main():
        async def hang_up(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        raw = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        address = f"127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        client = Client()
        try:
            with pytest.raises(ConnectError, match="before any response byte"):
                await client.request("POST", address, "/v1/completions", body=b"{}")
        finally:
            await client.aclose()
            raw.close()

    arun(main())


def test_server_dying_mid_body_is_a_response_error(arun):
    async def main():
        async def dies(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/chunked" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            writer.close()

        raw = await asyncio.start_server(dies, "127.0.0.1", 0)
        address = f"127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        client = Client()
        try:
            r = await client.request("GET", address, "/plain")
            assert r.status == 200
            with pytest.raises(ResponseError, match="middle of the response body"):
                await r.read()

            r = await client.request("GET", address, "/chunked")
            got = []
            with pytest.raises(ResponseError):
                async for chunk in r.iter_chunks():
                    got.append(chunk)
            assert got == [b"hello"]
            assert client.idle_connections() == 0
        finally:
            await client.aclose()
            raw.close()

    arun(main())


def test_timeouts(arun):
    async def main():
        never = asyncio.Event()

        async def handler(req):
            if req.path == "/hang":
                await never.wait()

            async def one_then_hang():
                yield b"first"
                await never.wait()

            return StreamResponse(200, one_then_hang())

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            with pytest.raises(asyncio.TimeoutError, match=r"sent no response head within 0.2s"):
                await client.request("GET", addr(server), "/hang", timeout=0.2)
            r = await client.request("GET", addr(server), "/stream", timeout=5, read_timeout=0.2)
            chunks = r.iter_chunks()
            assert await chunks.__anext__() == b"first"
            with pytest.raises(asyncio.TimeoutError, match=r"no response data for 0.2s"):
                await chunks.__anext__()
            # the server still answers on new connections
            r = await client.request("GET", addr(server), "/stream", timeout=5)
            assert await r.iter_chunks().__anext__() == b"first"
            r.close()
        finally:
            await client.aclose()
            await server.close()

    arun(main())


# --- protocol corners -----------------------------------------------------------------------------------------


def test_http10_head_expect_and_bodyless_statuses(arun):
    async def main():
        async def handler(req):
            if req.path == "/empty":
                return Response(204)
            return Response(200, b"hello", content_type="text/plain")

        server = await start_server(handler, "127.0.0.1", 0)
        try:
            # HTTP/1.0 without keep-alive: answered, then closed
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            status, headers, body = await read_raw_response(reader)
            assert (status, body, headers["connection"]) == (200, b"hello", "close")
            assert await reader.read() == b""
            writer.close()

            # HTTP/1.0 asking for keep-alive gets it
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(2):
                writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                status, headers, body = await read_raw_response(reader)
                assert (status, body, headers["connection"]) == (200, b"hello", "keep-alive")
            writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # HEAD: the length of the body, but no body; the next answer follows directly
            writer.write(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /empty HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5\r\n" in head
            # 204 carries no Content-Length and no body
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 204 No Content\r\n") and b"Content-Length" not in head
            # Expect: 100-continue is answered before the client sends the body
            writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"body")
            status, _, body = await read_raw_response(reader)
            assert (status, body) == (200, b"hello")
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_upgrade_request_is_answered_then_closed(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            status, _, body = await read_raw_response(reader)
            assert status == 200 and orjson.loads(body)["path"] == "/ws"
            assert await reader.read() == b""
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_oversized_head_gets_431(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n")
            status, headers, _ = await read_raw_response(reader)
            assert status == 431 and headers["connection"] == "close"
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_many_pipelined_requests_in_one_write(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"".join(b"GET /r/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(100)))
            paths = [orjson.loads((await read_raw_response(reader))[2])["path"] for _ in range(100)]
            assert paths == [f"/r/{i}" for i in range(100)]
            # bytes after a `Connection: close` request are ignored, not answered with 400
            writer.write(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
            status, _, body = await read_raw_response(reader)
            assert status == 200 and orjson.loads(body)["path"] == "/last"
            assert await reader.read() == b""
            writer.close()
        finally:
            await server.close()

    arun(main())


def test_stream_that_fails_midway_breaks_the_connection(arun):
    async def main():
        async def handler(req):
            async def tokens():
                yield b"data: 0\n\n"
                raise RuntimeError("engine crashed")

            return StreamResponse(200, tokens())

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", addr(server), "/v1/completions", body=b"{}")
            got = []
            with pytest.raises(ResponseError):
                async for chunk in r.iter_chunks():
                    got.append(chunk)
            assert got == [b"data: 0\n\n"]  # the client can tell a broken stream from a finished one
            r = await client.request("POST", addr(server), "/v1/completions", body=b"{}")
            assert r.status == 200  # and the server goes on
            r.close()
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_server_close_ends_open_streams(arun):
    async def main():
        closed = asyncio.Event()

        async def handler(req):
            async def tokens():
                try:
                    yield b"data: 0\n\n"
                    await asyncio.Event().wait()
                finally:
                    closed.set()

            return StreamResponse(200, tokens())

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", addr(server), "/v1/completions", body=b"{}")
            chunks = r.iter_chunks()
            assert await chunks.__anext__() == b"data: 0\n\n"
            await server.close()
            assert closed.is_set()
            with pytest.raises(ResponseError):
                await chunks.__anext__()
        finally:
            await client.aclose()

    arun(main())


def test_cancelled_request_drops_its_connection(arun):
    async def main():
        arrived = asyncio.Event()
        seen = []

        async def handler(req):
            seen.append(req)
            arrived.set()
            await req.disconnected.wait()
            return Response(200)

        server = await start_server(handler, "127.0.0.1", 0)
        client = Client()
        try:
            task = asyncio.create_task(client.request("GET", addr(server), "/slow"))
            await arrived.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await seen[0].disconnected.wait()  # the server learns the caller gave up
            assert client.idle_connections() == 0
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_idle_connection_closed_by_the_server_is_not_reused(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0, keep_alive_timeout=0.05)
        client = Client()
        try:
            r = await client.request("GET", addr(server), "/a")
            await r.read()
            assert client.idle_connections(addr(server)) == 1
            while client.idle_connections(addr(server)):  # the server's keep-alive timeout closes it
                await asyncio.sleep(0.01)
            r = await client.request("GET", addr(server), "/b")
            assert (await r.json())["path"] == "/b"
            assert server.accepted == 2
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_client_reads_unusual_but_valid_responses(arun):
    async def main():
        async def old_server(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/interim" in head:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
                             b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nok")
                await writer.drain()
                await reader.read()
            else:  # an HTTP/1.0-style body that ends when the connection does
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                await writer.drain()
            writer.close()

        raw = await asyncio.start_server(old_server, "127.0.0.1", 0)
        address = f"127.0.0.1:{raw.sockets[0].getsockname()[1]}"
        client = Client()
        try:
            r = await client.request("GET", address, "/eof")
            assert r.status == 200 and await r.read() == b"until the end"
            r = await client.request("GET", address, "/interim")
            assert r.status == 201 and r.headers["set-cookie"] == "a=1, b=2"
            assert await r.read() == b"ok"
        finally:
            await client.aclose()
            raw.close()

    arun(main())


def test_client_sets_framing_and_host(arun):
    async def main():
        server = await start_server(echo, "127.0.0.1", 0)
        client = Client()
        try:
            r = await client.request("POST", f"http://127.0.0.1:{server.port}/", "/p",
                                     headers={"Content-Length": "999", "Transfer-Encoding": "chunked"}, body=b"abc")
            got = await r.json()
            assert got["body"] == "abc" and got["headers"]["content-length"] == "3"
            assert "transfer-encoding" not in got["headers"]
            assert got["headers"]["host"] == f"127.0.0.1:{server.port}"
            r = await client.request("GET", addr(server), "/p", headers={"Host": "model.example"})
            got = await r.json()
            assert got["headers"]["host"] == "model.example" and "content-length" not in got["headers"]
        finally:
            await client.aclose()
            await server.close()

    arun(main())


def test_run_uses_uvloop():
    async def which():
        return type(asyncio.get_running_loop()).__module__

    assert run(which()).startswith("uvloop")
