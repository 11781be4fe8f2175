"""The public gRPC and HTTP endpoints of ``pgn-serve``: check every request, then pass it to Triton.

Triton's own front ends allocate what a request declares before any model code sees it: one HTTP
request declaring an image of ``[1, 100000, 100000, 3]`` made ``tritonserver`` allocate 30 GB and
abort (``std::bad_alloc``), and a zero-size image reached the Python model and came back as a
traceback with status INTERNAL. So ``tritonserver`` listens on loopback ports of its own, and
these endpoints, on the ports the user asked for, read each inference request's *header* only
(the declared model, input names and shapes), refuse what the served model cannot take with one
line (gRPC ``INVALID_ARGUMENT``, HTTP 400; a body larger than any acceptable request: gRPC
``RESOURCE_EXHAUSTED``, HTTP 413, before it is read), and forward everything else unchanged.
The JSON part of an HTTP request (the whole body without the binary-data extension) may be at
most :data:`JSON_HEADER_LIMIT` bytes: larger images go as binary data, as ``tritonclient`` sends them.

Rules for the image input of the served model (shape ``[batch, height, width, 3]``):
``1 <= batch <= max_batch``, ``height, width >= 1``, ``height * width <= max_pixels``.
Requests to other models (``NAME_metadata``) and non-inference calls (health, metadata) pass
unchanged. Refused without forwarding: gRPC ``ModelStreamInfer`` (the served models are not
decoupled) and compressed HTTP request bodies (their size is unknown until inflated).
"""
from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
from concurrent import futures
from typing import Any

from pgn_deploy.contract import PGNError, require
from pgn_deploy.runtime.limits import frame_refusal

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
HEADER_SLACK_BYTES = 1 << 20
NO_DEADLINE_S = 1e6
# Parsing JSON costs up to ~10x its size in Python objects: JSON-encoded image data is capped.
JSON_HEADER_LIMIT = 32 << 20
_INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(/versions/[^/]+)?/infer/?$")
_FORWARDED_HEADERS = ("content-type", "content-length", "inference-header-content-length", "content-encoding")


class RequestRules:
    """What the served model accepts: ``model``'s input ``image`` as ``[batch, H, W, 3]`` uint8.

    ``max_bytes``: the largest request body that can hold an acceptable request (the largest
    batch at the pixel limit, plus :data:`HEADER_SLACK_BYTES` for the header).
    """

    def __init__(self, model: str, image_input: str, max_batch: int, max_pixels: int) -> None:
        self.model, self.image_input = model, image_input
        self.max_batch, self.max_pixels = max_batch, max_pixels
        self.max_bytes = max_batch * max_pixels * 3 + HEADER_SLACK_BYTES

    def refusal(self, model: str, inputs: list[tuple[str, list[int]]]) -> str | None:
        """Why a request to ``model`` with ``(input name, shape)`` pairs is refused (None: accepted)."""
        if model != self.model:
            return None
        for name, shape in inputs:
            if name != self.image_input:
                continue
            if len(shape) != 4 or shape[3] != 3:
                return f"input {name!r} must have the shape [batch, height, width, 3], got {shape}"
            if not 1 <= shape[0] <= self.max_batch:
                return f"input {name!r}: batch {shape[0]} is outside 1..{self.max_batch}, shape {shape}"
            reason = frame_refusal(shape[1], shape[2], self.max_pixels)
            if reason:
                return f"input {name!r}: {reason}"
        return None


def _inference_headers(body: bytes, header_length: str | None) -> tuple[list[tuple[str, list[int]]], str | None]:
    """The ``(name, shape)`` pairs of an HTTP/JSON inference request, or ``([], reason)``."""
    try:
        size = len(body) if header_length is None else int(header_length)
        if not 0 <= size <= len(body):
            return [], f"Inference-Header-Content-Length {size} is outside the body of {len(body)} bytes"
        if size > JSON_HEADER_LIMIT:
            return [], (f"the JSON part of the request is {size} bytes, above {JSON_HEADER_LIMIT}: send image "
                        "data with the binary extension (tritonclient's default)")
        header = json.loads(body[:size])
        inputs = header["inputs"]
        return [(str(item["name"]), [int(d) for d in item["shape"]]) for item in inputs], None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        return [], f"the inference request is not valid JSON with inputs and shapes ({type(exc).__name__})"


def _grpc_inputs(request: bytes) -> tuple[str, list[tuple[str, list[int]]]]:
    """The model name and ``(name, shape)`` pairs of a serialized ``ModelInferRequest``."""
    service_pb2 = require("tritonclient.grpc.service_pb2", "the checked gRPC endpoint")
    message = service_pb2.ModelInferRequest.FromString(request)
    return message.model_name, [(tensor.name, list(tensor.shape)) for tensor in message.inputs]


class GrpcGuard:
    """A gRPC server on ``address`` that checks ``ModelInfer`` calls and forwards to ``upstream``."""

    def __init__(self, rules: RequestRules, address: str, upstream: str, workers: int = 16) -> None:
        require("tritonclient.grpc", "the checked gRPC endpoint")  # it brings grpcio
        import grpc

        self._grpc, self.rules = grpc, rules
        unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._channel = grpc.insecure_channel(upstream, options=unlimited)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers), handlers=[self],
            options=[("grpc.max_receive_message_length", rules.max_bytes), ("grpc.max_send_message_length", -1)],
        )
        if not self._server.add_insecure_port(address):
            raise PGNError(f"cannot listen on {address} (gRPC): the port is in use or the address is not local")

    def service(self, details: Any) -> Any:
        """gRPC's hook: the handler of one call (``details.method`` is the full method name)."""
        grpc, method = self._grpc, details.method
        if method == STREAM_METHOD:
            def refuse(requests: Any, context: Any) -> Any:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "ModelStreamInfer is not served: use ModelInfer")
            return grpc.stream_stream_rpc_method_handler(refuse)
        forward = self._channel.unary_unary(method)
        metadata = [(k, v) for k, v in details.invocation_metadata
                    if not k.startswith((":", "grpc-")) and k not in ("user-agent", "content-type", "te")]

        def handle(request: bytes, context: Any) -> bytes:
            if method == INFER_METHOD:
                try:
                    reason = self.rules.refusal(*_grpc_inputs(request))
                except Exception as exc:  # noqa: BLE001 - any undecodable message is the caller's fault
                    reason = f"the ModelInferRequest cannot be decoded ({type(exc).__name__})"
                if reason:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            remaining = context.time_remaining()  # a huge number when the caller set no deadline
            timeout = remaining if remaining is not None and remaining < NO_DEADLINE_S else None
            try:
                return forward(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
        return grpc.unary_unary_rpc_method_handler(handle)

    def start(self) -> None:
        """Serve in gRPC's own threads."""
        self._server.start()

    def stop(self) -> None:
        """Stop serving (calls in flight get one second) and close the upstream channel."""
        self._server.stop(grace=1).wait()
        self._channel.close()


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    """One HTTP/1.1 connection of :class:`HttpGuard` (``server.rules``, ``server.upstream``)."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: Triton logs the requests it serves."""

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, reason: str, close: bool = False) -> None:
        self._reply(status, json.dumps({"error": reason}).encode(), close=close)

    def _body(self) -> bytes | None:
        """The request body, or None after refusing it (missing length, too long, compressed)."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse(411, "send the body with a Content-Length, not chunked", close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, "Content-Length is not a whole number >= 0", close=True)
            return None
        if length > self.server.rules.max_bytes:
            self._refuse(413, f"the request body of {length} bytes is above the limit of "
                              f"{self.server.rules.max_bytes} bytes (--max-pixels)", close=True)
            return None
        return self.rfile.read(length)

    def _forward(self, body: bytes | None) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED_HEADERS}
        connection = http.client.HTTPConnection(*self.server.upstream)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            reply = {k: v for k, v in response.getheaders()
                     if k.lower() in _FORWARDED_HEADERS and k.lower() != "content-length"}
            self._reply(response.status, data, reply)
        except OSError as exc:
            self._refuse(502, f"the Triton server did not answer: {exc}")
        finally:
            connection.close()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        """Health, metadata and statistics: forwarded."""
        self._forward(None)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        """Inference requests are checked, then forwarded; other POSTs are forwarded."""
        body = self._body()
        if body is None:
            return
        match = _INFER_PATH.match(self.path.split("?")[0])
        if match:
            if self.headers.get("Content-Encoding", "identity").lower() != "identity":
                self._refuse(415, "compressed inference requests are not accepted")
                return
            inputs, reason = _inference_headers(body, self.headers.get("Inference-Header-Content-Length"))
            reason = reason or self.server.rules.refusal(match["model"], inputs)
            if reason:
                self._refuse(400, reason)
                return
        self._forward(body)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], rules: RequestRules, upstream: tuple[str, int]) -> None:
        self.rules, self.upstream = rules, upstream
        super().__init__(address, _HttpHandler)


class HttpGuard:
    """An HTTP server on ``(host, port)`` that checks inference requests and forwards to ``upstream``."""

    def __init__(self, rules: RequestRules, address: tuple[str, int], upstream: tuple[str, int]) -> None:
        try:
            self._server = _HttpServer(address, rules, upstream)
        except OSError as exc:
            raise PGNError(f"cannot listen on {address[0]}:{address[1]} (HTTP): {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="pgn-http-guard", daemon=True)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
