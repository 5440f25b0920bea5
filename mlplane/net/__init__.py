"""Network drivers of the traffic plane: a small HTTP/1.1 server and pooled client (``mlplane.net.http``)."""

from mlplane.net.http import (
    NOT_FORWARDED,
    Client,
    ClientError,
    ClientResponse,
    ConnectError,
    ConnectTimeout,
    Request,
    Response,
    ResponseError,
    Server,
    StreamResponse,
    json_response,
    run,
    start_server,
)

__all__ = [
    "NOT_FORWARDED",
    "Client",
    "ClientError",
    "ClientResponse",
    "ConnectError",
    "ConnectTimeout",
    "Request",
    "Response",
    "ResponseError",
    "Server",
    "StreamResponse",
    "json_response",
    "run",
    "start_server",
]
