"""Every pgn-* command on a core install (``pip install .``, no extras), as a deployment host has
it (issue 19 item 8): ``--help`` works, a real call either works (pgn-run, pgn-calibrate,
pgn-lint, pgn-bench, pgn-check --against) or ends in one line naming the extra to install,
exit 2 -- never a traceback.

The venv is built once per test session from this checkout (pip's cache makes it ~20 s); when
it cannot be built (no package index reachable) the tests are skipped with pip's reason.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.common import COMMANDS
from tests.support.runtime_models import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def core(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding ``pip install <this checkout>`` and nothing else."""
    root = tmp_path_factory.mktemp("core-venv")
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    if made.returncode:
        pytest.skip(f"cannot create a venv: {made.stderr.strip()[-300:]}")
    source = root / "src"  # a clean copy: no build/ or egg-info of the working tree
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
                               capture_output=True, text=True, timeout=900)
    if installed.returncode:
        pytest.skip(f"`pip install .` into a fresh venv failed (no package index?): {installed.stderr.strip()[-300:]}")
    return venv / "bin"


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("core-files")
    model = build_model(root / "tiny.pgn.onnx")
    image = root / "images" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    checkpoint = root / "net.pth"
    checkpoint.write_bytes(b"PK\x03\x04 a torch checkpoint the core install cannot read")
    scores, labels = root / "scores", root / "labels"
    scores.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(1)
    for frame in ("f1", "f2"):
        label = np.zeros((16, 16), np.uint8)
        label[4:10, 4:10] = 1
        cv2.imwrite(str(labels / f"{frame}.png"), label)
        np.save(scores / f"{frame}.npy", (label + rng.random((16, 16))).astype(np.float32))
    from pgn_deploy.synthroad.layouts import write_synthroad

    write_synthroad(root / "synthroad", frames=2, seed=1, size=(64, 128), progress=False, layouts=["roadanomaly21"])
    return {"root": root, "model": model, "image": image, "checkpoint": checkpoint, "scores": scores,
            "labels": labels, "dataset": root / "synthroad"}


def _run(core: Path, command: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(core / f"pgn-{command}"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


HELP_SCRIPT = """
import contextlib, io, json, sys
from importlib.metadata import entry_points
seen = {}
for ep in entry_points(group="console_scripts"):
    if ep.name.startswith("pgn-"):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                code = ep.load()(["--help"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = repr(exc)
        seen[ep.name] = [code, ep.name in out.getvalue()]
print(json.dumps(seen))
"""


def test_every_command_has_help_on_a_core_install(core, tmp_path):
    """Every installed ``pgn-*`` entry point loads and prints its help (one interpreter for all)."""
    import json

    done = subprocess.run([str(core / "python"), "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(seen) == sorted(f"pgn-{c}" for c in COMMANDS)
    assert all(code in (0, None) and named for code, named in seen.values()), seen


def _calls(files: dict[str, Path], out: Path) -> dict[str, tuple[list[object], str | None]]:
    """command -> (arguments, None when it must work on a core install, else the extra it names)."""
    model, image = files["model"], files["image"]
    return {
        "export": ([files["checkpoint"], "-o", out / "x.onnx"], "export"),
        "check": ([model], "export"),
        "check --against": ([model, "--against", model, "--samples", "1", "--input-shape", "1x3x32x32"], None),
        "run": ([model, image, "--out", out / "run", "-q"], None),
        "calibrate": ([model, image, "-o", out / "calibrated.onnx"], None),
        "metrics": (["--scores", files["scores"], "--labels", files["labels"]], None),
        "eval": ([model, "--dataset", f"road_anomaly21:{files['dataset']}", "--out", out / "eval", "-q"], "eval"),
        "synthroad": (["--out", out / "synth", "--frames", "1", "--size", "64x128", "--quiet"], None),
        "build": ([model, "--shapes", "input:1x3x32x32/1x3x32x32/1x3x32x32"], "trt"),
        "lint": ([model], None),
        "triton": ([model, "--repo", out / "repo"], "triton"),
        "bench": ([model, "--shape", "32x32", "--iterations", "2", "--warmup", "1"], None),
        "serve": ([model], "serve"),
        "mine": ([model, image, "--out", out / "mine"], "mine"),
    }


@pytest.mark.parametrize("call", ["export", "check", "check --against", "run", "calibrate", "metrics", "eval",
                                  "synthroad", "build", "lint", "triton", "bench", "serve", "mine"])
def test_one_real_call_works_or_names_the_extra(core, files, call, tmp_path):
    args, extra = _calls(files, tmp_path)[call]
    done = _run(core, call.split()[0], *args, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    if extra is None:
        assert done.returncode == 0, done.stderr
    else:
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert f"pip install 'pgn-deploy[{extra}]'" in lines[0], lines[0]
