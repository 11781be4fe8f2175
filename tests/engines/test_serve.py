"""pgn_deploy.engines.serve: a live PyTriton server on loopback, clients in several threads, results
equal to the local runtime.

PyTriton (``nvidia-pytriton``) needs numpy < 2, so the server runs in its own virtualenv
``.venv-serve`` (created by ``make venv-serve``); the client side (``tritonclient``) runs here.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from pgn_deploy.contract import PGNError
from pgn_deploy.engines.serve import PGNClient, prefer_interpreter_libpython
from tests.support.engine_models import REPO, grafted

pytest.importorskip("tritonclient.grpc", reason="tritonclient (extra 'triton') is not installed")

SERVE_PYTHON = REPO / ".venv-serve" / "bin" / "python"
# Generous limits: this tests a clean start and shutdown, not their speed. A quiet machine
# starts in ~5 s and stops in ~7 s (tritonserver unloads the models, then exits).
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 120


def _serve_python() -> Path:
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"{SERVE_PYTHON} is missing: PyTriton needs numpy<2 and runs from its own venv "
                    "(create it with `make venv-serve`)")
    probe = subprocess.run([str(SERVE_PYTHON), "-c", "import pytriton, pgn_deploy"], capture_output=True, timeout=60)
    if probe.returncode:
        pytest.skip(f"{SERVE_PYTHON} cannot import pytriton and pgn_deploy (re-run `make venv-serve`)")
    return SERVE_PYTHON


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_HTTP_PORTS: dict[str, int] = {}


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the server's clean shutdown), then kill this session's process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _start_server(python: Path, log: Path, name: str = "pgn",
                  extra: tuple[str, ...] = ()) -> tuple[str, subprocess.Popen | None]:
    """Start a server on fresh loopback ports; (gRPC url, process), or (url, None) with the
    process stopped if it exited before both models were ready. ``_HTTP_PORTS[url]`` is its HTTP port."""
    grpc_port, http_port = _free_port(), _free_port()
    _HTTP_PORTS[f"127.0.0.1:{grpc_port}"] = http_port
    # Started with SIGINT ignored, as a shell starts a background job: the disposition is
    # inherited through exec, and the server must still stop on SIGINT. (Before pgn-serve set
    # its own handler, full-suite runs hung here three times, SIGINT ignored the same way.)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with open(log, "wb") as sink:
            process = subprocess.Popen(
                [str(python), "-m", "pgn_deploy.cli.serve", str(grafted("tiny")), "--host", "127.0.0.1",
                 "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--instances", "2",
                 "--max-batch", "8", "--name", name, *extra],
                stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    url = f"127.0.0.1:{grpc_port}"
    import tritonclient.grpc as grpc

    probe = grpc.InferenceServerClient(url=url)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while process.poll() is None:
            try:
                if probe.is_model_ready(name) and probe.is_model_ready(name + "_metadata"):
                    return url, process
            except grpc.InferenceServerException:
                pass
            if time.monotonic() > deadline:
                _stop(process)
                pytest.fail(f"the server was not ready in {START_TIMEOUT_S} s: "
                            + log.read_text(errors="replace")[-2000:])
            time.sleep(0.5)
        return url, None
    finally:
        probe.close()


@pytest.fixture
def server(tmp_path):
    """A PyTriton server for grafted("tiny") on free loopback ports: (gRPC url, process).

    A server that exits while starting is started once more on new ports: the ports come from
    binding port 0 and releasing it, and on a loaded machine PyTriton's start-up handshake
    between tritonserver and its Python backend was seen to fail once ("Connection refused").
    Two failed starts fail the test with both logs."""
    python = _serve_python()
    logs = [tmp_path / "server-1.log", tmp_path / "server-2.log"]
    for log in logs:
        url, process = _start_server(python, log)
        if process is not None:
            break
    else:
        pytest.fail("the server exited twice while starting: "
                    + " | ".join(log.read_text(errors="replace")[-1500:] for log in logs))
    try:
        yield url, process
    finally:
        _stop(process)


def test_live_server_matches_the_local_runtime_then_stops(server):
    """4 client threads x 3 images of 2 sizes through Triton's dynamic batcher; then SIGINT."""
    from pgn_deploy.runtime import Result, Runtime

    url, process = server
    rng = np.random.default_rng(1)
    batches = [[rng.integers(0, 256, (48 + 16 * (i % 2), 64, 3), dtype=np.uint8) for i in range(3)]
               for _ in range(4)]
    client = PGNClient(url, "pgn", timeout_s=60)

    def send(images):
        return [client.run(image) for image in images]

    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        remote = [r for results in pool.map(send, batches) for r in results]
    client.close()
    local_runtime = Runtime(grafted("tiny"), backend="ort-cpu")
    local = local_runtime.run([image for images in batches for image in images])
    assert client.metadata.to_json() == local_runtime.metadata.to_json()
    for got, want in zip(remote, local):
        assert isinstance(got, Result)
        assert got.default_score == want.default_score and got.calibration == want.calibration
        np.testing.assert_array_equal(got.pred, want.pred)
        assert set(got.scores) == set(want.scores)
        for name, value in want.scores.items():
            assert got.scores[name].dtype == np.float32
            np.testing.assert_allclose(got.scores[name], value, rtol=1e-5, atol=1e-6 * float(np.abs(value).max()))
    assert process.poll() is None
    _stop(process)
    assert process.returncode == 0, "SIGINT must stop the server cleanly even when its parent ignored SIGINT"
    with pytest.raises(PGNError, match="metadata"):
        PGNClient(url, "pgn", timeout_s=5)


def test_libpython_folder_goes_first(monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib/x86_64-linux-gnu:/opt/x")
    libdir = prefer_interpreter_libpython()
    assert libdir == sysconfig.get_config_var("LIBDIR")
    parts = os.environ["LD_LIBRARY_PATH"].split(os.pathsep)
    assert parts[0] == libdir and parts[1:] == ["/usr/lib/x86_64-linux-gnu", "/opt/x"]
    assert prefer_interpreter_libpython() == libdir
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep).count(libdir) == 1


def test_client_without_server_fails_with_one_clear_error():
    with pytest.raises(PGNError, match="cannot read the metadata"):
        PGNClient(f"127.0.0.1:{_free_port()}", "pgn", timeout_s=5)


# --------------------------------------------------------------------------- hostile requests
MAX_PIXELS = 20_000


def _our_temp_litter(name: str, since: float) -> list[Path]:
    """Triton's Python-backend folders in /tmp left by a server of model ``name``: ``folder*``
    whose config names the model, and ``python_env_*`` made after ``since`` (they are empty)."""
    litter = []
    for entry in Path("/tmp").iterdir():
        try:
            if entry.name.startswith("folder") and f'name: "{name}' in (entry / "config.pbtxt").read_text():
                litter.append(entry)
            elif entry.name.startswith("python_env_") and entry.stat().st_ctime >= since:
                litter.append(entry)
        except OSError:
            continue
    return litter


def _our_stubs(name: str) -> list[int]:
    """Pids of Python-backend stubs still running a model of a server named ``name``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if args[0].endswith(b"triton_python_backend_stub") and \
                    f'name: "{name}'.encode() in (Path(args[1].decode()).parents[1] / "config.pbtxt").read_bytes():
                pids.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return pids


@pytest.fixture
def guarded_server(tmp_path):
    """A server with --max-pixels 20000 under a model name of its own: (url, process, name, log)."""
    python = _serve_python()
    name = f"pgnh{os.getpid()}"
    since = time.time() - 1
    for attempt in (1, 2):
        log = tmp_path / f"server-{attempt}.log"
        url, process = _start_server(python, log, name, ("--max-pixels", str(MAX_PIXELS)))
        if process is not None:
            break
    else:
        pytest.fail("the server exited twice while starting: " + log.read_text(errors="replace")[-1500:])
    try:
        yield url, process, name, log
    finally:
        _stop(process)
    assert _our_stubs(name) == []
    assert _our_temp_litter(name, since) == []


def _raw_grpc_infer(url: str, model: str, shape: list[int], data: bytes):
    """Send one ModelInfer with any declared shape; (status code name, details)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "image", "UINT8"
    tensor.shape.extend(shape)
    request.raw_input_contents.append(data)
    with grpc.insecure_channel(url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
            return "OK", ""
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()


def _http_post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import http.client

    port = _HTTP_PORTS[url]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_hostile_requests_are_refused_in_one_line_and_good_ones_keep_being_served(guarded_server):
    """Issue 19 items 1-2: a declared 100000 x 100000 image (it killed tritonserver through HTTP),
    a zero-size image (a traceback as INTERNAL), a real image above --max-pixels, wrong ranks."""
    import json

    url, process, name, log = guarded_server
    client = PGNClient(url, name, timeout_s=60)
    image = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    before = client.run(image)

    huge = json.dumps({"inputs": [{"name": "image", "shape": [1, 100000, 100000, 3], "datatype": "UINT8",
                                   "data": [1, 2, 3]}]}).encode()
    status, text = _http_post(url, f"/v2/models/{name}/infer", huge)
    assert status == 400 and "above the limit of 20000 pixels" in text and "\n" not in text
    zero = json.dumps({"inputs": [{"name": "image", "shape": [1, 0, 0, 3], "datatype": "UINT8", "data": []}]})
    status, text = _http_post(url, f"/v2/models/{name}/infer", zero.encode())
    assert status == 400 and "empty" in text
    status, text = _http_post(url, f"/v2/models/{name}/infer", b"x" * 10,
                              {"Content-Length": str(10**12)})  # refused before a byte of it is read
    assert status == 413, text
    status, text = _http_post(url, f"/v2/models/{name}/infer", b"{not json")
    assert status == 400 and "not valid JSON" in text

    for shape, data, want in [
        ([1, 100000, 100000, 3], b"\0" * 30, "above the limit"),
        ([1, 0, 0, 3], b"", "empty"),
        ([1, 200, 200, 3], b"\0" * (200 * 200 * 3), "above the limit of 20000 pixels"),  # real data
        ([8, 8, 3], b"\0" * 192, "[batch, height, width, 3]"),
        ([9, 8, 8, 3], b"\0" * 9 * 192, "batch 9 is outside 1..8"),
    ]:
        code, details = _raw_grpc_infer(url, name, shape, data)
        assert code == "INVALID_ARGUMENT", (shape, code, details)
        assert want in details and "\n" not in details and "Traceback" not in details

    assert process.poll() is None, "a hostile request must not stop the server"
    after = client.run(image)
    np.testing.assert_array_equal(after.pred, before.pred)
    for key, value in before.scores.items():
        np.testing.assert_array_equal(after.scores[key], value)
    status, text = _http_post(url, f"/v2/models/{name}/infer", json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": list(range(12))}],
         "outputs": [{"name": "pred"}]}).encode())
    assert status == 200 and json.loads(text)["outputs"][0]["shape"] == [1, 2, 2]
    client.close()


def test_a_crashed_tritonserver_leaves_no_litter_and_one_line(guarded_server):
    """Issue 19 item 1: tritonserver aborting (SIGABRT, as std::bad_alloc did) must leave no
    backend stub running and no ``folder*``/``python_env_*`` in /tmp; pgn-serve says so in one line."""
    url, process, name, log = guarded_server
    assert _our_stubs(name), "the test must see the stubs it then expects to be gone"
    triton = [int(p.name) for p in Path("/proc").glob("[0-9]*")
              if (p / "stat").exists() and _ppid(p) == process.pid and b"tritonserver" in _cmdline(p)]
    assert len(triton) == 1
    os.kill(triton[0], signal.SIGABRT)
    assert process.wait(STOP_TIMEOUT_S) == 2
    assert "pgn-serve: error: tritonserver exited unexpectedly" in log.read_text(errors="replace")
    assert _our_stubs(name) == []


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
