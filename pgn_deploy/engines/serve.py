"""A live Triton Inference Server on one host (PyTriton), and a client that returns ``Result``s.

Server (``nvidia-pytriton``, extra ``serve``; its wheel carries ``tritonserver`` and runs on
CPU-only hosts): :class:`PGNServer` loads a grafted model (ONNX or TensorRT plan) into a
:class:`~pgn_deploy.runtime.Runtime` and binds two Triton models:

* ``NAME``: input ``image`` (uint8 H x W x 3, RGB; Triton adds the batch dimension), outputs
  ``pred`` (int32 H x W) and one float32 H x W map per score output (``pgn_uni_p0.5``, ...),
  all at the image's size. Dynamic batching merges concurrent requests; one batch may hold
  images of different sizes (the runtime groups them by size). ``instances`` model instances
  share the one runtime (its ``run`` is thread-safe).
* ``NAME_metadata``: no input, output ``pgn_deploy``: the model's metadata JSON.

Client (``tritonclient[grpc]``, extra ``triton``; no numpy pin): :class:`PGNClient` sends
images over gRPC and returns the same :class:`~pgn_deploy.runtime.Result` objects as
``Runtime.run`` (scores, ``pred``, calibration, default score).

Run a server: ``pgn-serve MODEL [--host 127.0.0.1] [--grpc-port 8001] [--max-pixels N] ...``.

Hostile requests: ``tritonserver`` listens on loopback ports of its own; the ports the user asked
for are served by :mod:`pgn_deploy.engines.serve_guard`, which refuses an image above
``max_pixels`` (default :func:`~pgn_deploy.runtime.limits.default_max_pixels`), an empty one or
a wrong shape with one line (gRPC INVALID_ARGUMENT, HTTP 400) before Triton allocates anything,
and forwards the rest. If ``tritonserver`` dies anyway, :meth:`PGNServer.stop` ends the Python
backend stubs it started and removes the folders they left in ``/tmp`` (``folder*``,
``python_env_*``: Triton's Python backend creates them there whatever ``TMPDIR`` says).

PyTriton's Python-backend stub process loads the first ``libpython3.X.so`` on the library
path; with a non-system Python that is the system's (older) one and model loading fails.
:func:`prefer_interpreter_libpython` puts the running interpreter's own library folder first
in ``LD_LIBRARY_PATH`` before the server starts.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

from pgn_deploy.contract import BadInputError, Metadata, PGNError, require
from pgn_deploy.runtime.limits import check_max_pixels, default_max_pixels

IMAGE_INPUT = "image"
METADATA_OUTPUT = "pgn_deploy"
METADATA_SUFFIX = "_metadata"
DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000


def prefer_interpreter_libpython() -> str | None:
    """Put this interpreter's ``LIBDIR`` first in ``LD_LIBRARY_PATH``; returns it (or None)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not Path(libdir).is_dir():
        return None
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])
    return libdir


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Triton's Python backend makes these with mkdtemp("/tmp/...XXXXXX"), not under TMPDIR.
_BACKEND_TEMP_DIR = Path("/tmp")
_BACKEND_TEMP_PREFIXES = ("folder", "python_env_")
_STUB_NAME = "triton_python_backend_stub"


def _backend_temp_dirs() -> set[Path]:
    """This user's Python-backend folders in /tmp now."""
    try:
        entries = list(_BACKEND_TEMP_DIR.iterdir())
    except OSError:
        return set()
    found = set()
    for entry in entries:
        try:
            if entry.name.startswith(_BACKEND_TEMP_PREFIXES) and entry.is_dir() and entry.stat().st_uid == os.getuid():
                found.add(entry)
        except OSError:
            continue
    return found


def _stub_processes(folders: set[Path]) -> dict[int, bytes]:
    """``pid -> cmdline`` of the Python-backend stubs running a model from one of ``folders``."""
    stubs: dict[int, bytes] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if len(args) > 1 and args[0].endswith(_STUB_NAME.encode()) and any(
                args[1].startswith(bytes(folder) + b"/") for folder in folders):
            stubs[int(proc.name)] = cmdline
    return stubs


def _result_outputs(results: list[Any], names: list[str]) -> dict[str, np.ndarray]:
    """Stack the ``Result``s of one request (same-size images) into its output arrays."""
    outputs = {"pred": np.stack([r.pred for r in results]).astype(np.int32)}
    for name in names:
        outputs[name] = np.stack([r.scores[name] for r in results]).astype(np.float32)
    return outputs


class PGNServer:
    """A PyTriton server running one grafted model through :class:`~pgn_deploy.runtime.Runtime`.

    ``name``: the Triton model name (default ``pgn``); ``backend``: the runtime backend
    (``auto``, ``ort-cpu``, ``trt``, ...); ``max_batch``: Triton's max batch size;
    ``max_queue_delay_us``: how long the batcher waits to fill a batch; ``host``: the address
    the public endpoints bind to (``127.0.0.1`` by default: loopback only); ``max_pixels``: the
    largest image (height x width) a request may carry (default: derived from the model's
    outputs and this host's memory). Use as a context manager (:meth:`start`/:meth:`stop`);
    :meth:`wait` blocks while it serves and raises :class:`PGNError` if ``tritonserver`` died.
    """

    def __init__(self, model_path: str | os.PathLike[str], name: str = "pgn", backend: str = "auto",
                 max_batch: int = 8, instances: int = 1, max_queue_delay_us: int = 1000,
                 host: str = "127.0.0.1", grpc_port: int = DEFAULT_GRPC_PORT,
                 http_port: int = DEFAULT_HTTP_PORT, metrics_port: int | None = None,
                 max_pixels: int | None = None) -> None:
        from pgn_deploy.runtime import Runtime

        if max_batch < 1 or instances < 1 or max_queue_delay_us < 0:
            raise BadInputError("max_batch and instances must be >= 1 and max_queue_delay_us >= 0")
        if max_pixels is not None:
            check_max_pixels(max_pixels)
        self.runtime = Runtime(model_path, backend=backend, max_batch=max_batch)
        self.max_pixels = max_pixels or default_max_pixels(len(self.runtime.score_names) + 1)
        self.name = name
        self.max_batch = max_batch
        self.instances = instances
        self.max_queue_delay_us = max_queue_delay_us
        self.host = host
        self.ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self._triton: Any = None
        self._guards: list[Any] = []
        self._litter: set[Path] = set()
        self._stubs: dict[int, bytes] = {}

    def _infer(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Triton's callback: every image of every request through one ``Runtime.run``."""
        images = [image for request in requests for image in request[IMAGE_INPUT]]
        results = self.runtime.run(images) if images else []
        responses, start = [], 0
        for request in requests:
            count = len(request[IMAGE_INPUT])
            responses.append(_result_outputs(results[start:start + count], self.runtime.score_names))
            start += count
        return responses

    def _metadata(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        text = self.runtime.metadata.dumps().encode()
        return [{METADATA_OUTPUT: np.array([text], dtype=np.bytes_)} for _ in requests]

    def start(self) -> PGNServer:
        """Start ``tritonserver`` and load both models (returns when they are ready)."""
        pytriton_triton = require("pytriton.triton", "serving with PyTriton")
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        from pgn_deploy.engines.serve_guard import GrpcGuard, HttpGuard, RequestRules

        prefer_interpreter_libpython()
        metrics = self.ports["metrics"]
        inner = {"grpc": _free_loopback_port(), "http": _free_loopback_port()}
        config = pytriton_triton.TritonConfig(
            http_address="127.0.0.1", http_port=inner["http"],
            grpc_address="127.0.0.1", grpc_port=inner["grpc"],
            allow_metrics=metrics is not None, metrics_address=self.host if metrics else None,
            metrics_port=metrics, allow_sagemaker=False, allow_vertex_ai=False,
        )
        rules = RequestRules(self.name, IMAGE_INPUT, self.max_batch, self.max_pixels)
        before = _backend_temp_dirs()
        triton = pytriton_triton.Triton(config=config)
        try:
            triton.bind(
                model_name=self.name,
                infer_func=[self._infer] * self.instances,
                inputs=[Tensor(name=IMAGE_INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name="pred", dtype=np.int32, shape=(-1, -1)),
                         *(Tensor(name=n, dtype=np.float32, shape=(-1, -1)) for n in self.runtime.score_names)],
                config=ModelConfig(max_batch_size=self.max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=self.max_queue_delay_us)),
                strict=True,
            )
            triton.bind(
                model_name=self.name + METADATA_SUFFIX,
                infer_func=self._metadata,
                inputs=[Tensor(name="unused", dtype=np.bool_, shape=(1,), optional=True)],
                outputs=[Tensor(name=METADATA_OUTPUT, dtype=np.bytes_, shape=(1,))],
                config=ModelConfig(batching=False),
                strict=True,
            )
            triton.run()
            self._triton = triton
            self._litter = _backend_temp_dirs() - before
            self._stubs = _stub_processes(self._litter)
            self._guards = [GrpcGuard(rules, f"{self.host}:{self.ports['grpc']}", f"127.0.0.1:{inner['grpc']}"),
                            HttpGuard(rules, (self.host, self.ports["http"]), ("127.0.0.1", inner["http"]))]
            for guard in self._guards:
                guard.start()
        except BaseException:
            if self._triton is None:
                triton.stop()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the endpoints and the server, then remove what a crashed server left (idempotent)."""
        for guard in self._guards:
            guard.stop()
        self._guards = []
        if self._triton is not None:
            self._triton.stop()
            self._triton = None
        self._remove_litter()

    def _remove_litter(self) -> None:
        """End this server's backend stubs still running and remove its folders in /tmp."""
        for pid, cmdline in self._stubs.items():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        self._stubs = {}
        for folder in self._litter:
            shutil.rmtree(folder, ignore_errors=True)
        self._litter = set()

    def wait(self, poll_s: float = 1.0) -> None:
        """Block while the started server is alive; Ctrl-C (SIGINT) returns.

        Raises :class:`PGNError` when ``tritonserver`` exits by itself (after cleaning up).
        """
        try:
            while self._triton is not None and self._triton.is_alive():
                time.sleep(poll_s)
        except KeyboardInterrupt:
            return
        if self._triton is not None:
            self.stop()
            raise PGNError("tritonserver exited unexpectedly (its log is above); the server was stopped")

    def __enter__(self) -> PGNServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class PGNClient:
    """A gRPC client of :class:`PGNServer` that returns :class:`~pgn_deploy.runtime.Result`.

    ``url``: ``host:port`` of the server's gRPC endpoint; ``model``: the served model name.
    One client may be used from several threads (each call is one gRPC request).
    """

    def __init__(self, url: str = f"127.0.0.1:{DEFAULT_GRPC_PORT}", model: str = "pgn",
                 timeout_s: float = 60.0) -> None:
        grpc = require("tritonclient.grpc", "the Triton client")
        self._grpc = grpc
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self._client = grpc.InferenceServerClient(url=url)
        self.metadata = self._fetch_metadata()
        self.score_names = self.metadata.score_outputs

    def _fetch_metadata(self) -> Metadata:
        try:
            response = self._client.infer(self.model + METADATA_SUFFIX, inputs=[],
                                          outputs=[self._grpc.InferRequestedOutput(METADATA_OUTPUT)],
                                          client_timeout=self.timeout_s)
        except self._grpc.InferenceServerException as exc:
            raise PGNError(f"{self.url}: cannot read the metadata of model {self.model!r}: {exc.message()}") from None
        return Metadata.loads(response.as_numpy(METADATA_OUTPUT)[0].decode())

    @property
    def default_score(self) -> str:
        """The map masks, instances and heatmaps use by default: the first PGN map, else the first score map."""
        return (self.metadata.pgn_outputs or self.metadata.score_outputs)[0]

    def run(self, image: np.ndarray, color: str = "RGB") -> Any:
        """One uint8 H x W x 3 image -> its :class:`~pgn_deploy.runtime.Result`."""
        from pgn_deploy.runtime import Result
        from pgn_deploy.runtime.preprocess import check_color, check_image

        color = check_color(color)
        image = check_image(image)
        if color != "RGB":
            image = image[..., ::-1]
        grpc = self._grpc
        tensor = grpc.InferInput(IMAGE_INPUT, [1, *image.shape], "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(image)[None])
        names = ["pred", *self.score_names]
        start = time.perf_counter()
        try:
            response = self._client.infer(self.model, inputs=[tensor],
                                          outputs=[grpc.InferRequestedOutput(n) for n in names],
                                          client_timeout=self.timeout_s)
        except grpc.InferenceServerException as exc:
            raise PGNError(f"{self.url}: inference on model {self.model!r} failed: {exc.message()}") from None
        elapsed = (time.perf_counter() - start) * 1e3
        return Result(pred=response.as_numpy("pred")[0],
                      scores={n: response.as_numpy(n)[0] for n in self.score_names},
                      timings={"request_ms": elapsed}, default_score=self.default_score,
                      calibration=self.metadata.calibration)

    def close(self) -> None:
        """Close the gRPC connection; the client cannot be used afterwards."""
        self._client.close()
