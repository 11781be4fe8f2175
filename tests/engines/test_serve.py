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


def _stop(process: subprocess.Popen) -> None:
    """SIGINT (the server's clean shutdown), then kill this session's process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _start_server(python: Path, log: Path) -> tuple[str, subprocess.Popen | None]:
    """Start a server on fresh loopback ports; (gRPC url, process), or (url, None) with the
    process stopped if it exited before both models were ready."""
    grpc_port, http_port = _free_port(), _free_port()
    # Started with SIGINT ignored, as a shell starts a background job: the disposition is
    # inherited through exec, and the server must still stop on SIGINT. (Before pgn-serve set
    # its own handler, full-suite runs hung here three times, SIGINT ignored the same way.)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with open(log, "wb") as sink:
            process = subprocess.Popen(
                [str(python), "-m", "pgn_deploy.cli.serve", str(grafted("tiny")), "--host", "127.0.0.1",
                 "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--instances", "2",
                 "--max-batch", "8"],
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
                if probe.is_model_ready("pgn") and probe.is_model_ready("pgn_metadata"):
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
