"""pgn-run end to end: images, folders, a video, bad files, JSON, and a host without PyTorch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.run import main
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.visualize import PANEL_WIDTH
from tests.support.runtime_models import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny.pgn.onnx")


def write_image(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


@pytest.fixture()
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    write_image(folder / "a.png", 40, 56, 1)
    write_image(folder / "b.jpg", 40, 56, 2)
    write_image(folder / "deep" / "c.png", 31, 45, 3)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("ignored")
    return folder


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([*argv, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_with_a_corrupt_image_writes_the_others_and_fails(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, stdout, stderr = run([str(model), str(inputs), "--out", str(out), "--save-npy", "--threshold", "30"], capsys)
    assert code == 1
    assert "corrupt.png: not a readable image" in stderr and "Traceback" not in stderr
    assert (out / "keep.txt").read_text() == "mine"
    for stem in ("a", "b", "deep/c"):
        for kind in ("seg.png", "heatmap.png", "overlay.png", "ood.png", "pgn_uni_p0.5.npy", "msp.npy"):
            assert (out / f"{stem}.{kind}").is_file(), f"{stem}.{kind}"
    assert not (out / "corrupt.seg.png").exists()
    assert not list(out.rglob(".*.tmp"))
    # raw maps and mask equal the runtime's results on the BGR file
    image = cv2.imread(str(inputs / "deep" / "c.png"))
    result = Runtime(model, "ort-cpu").run(image, color="BGR")
    saved = np.load(out / "deep" / "c.pgn_uni_p2.npy")
    assert saved.dtype == np.float32 and saved.shape == (31, 45)
    np.testing.assert_array_equal(saved, result.scores["pgn_uni_p2"])
    mask = cv2.imread(str(out / "deep" / "c.ood.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, result.ood_mask(30.0) * 255)
    overlay = cv2.imread(str(out / "a.overlay.png"))
    assert overlay.shape == (80, 56 + PANEL_WIDTH, 3)  # legend and colour bar at the right
    assert "threshold 30 (given)" in stdout


def test_existing_outputs_need_force_and_side_layout(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    good = [str(inputs / "a.png"), str(inputs / "b.jpg")]
    assert run([str(model), *good, "--out", str(out)], capsys)[0] == 0
    before = (out / "a.seg.png").read_bytes()
    code, _, stderr = run([str(model), *good, "--out", str(out), "--layout", "side"], capsys)
    assert code == 2 and "exist" in stderr and "--force" in stderr
    assert (out / "a.seg.png").read_bytes() == before
    assert run([str(model), *good, "--out", str(out), "--layout", "side", "--force"], capsys)[0] == 0
    assert cv2.imread(str(out / "a.overlay.png")).shape == (40, 112 + PANEL_WIDTH, 3)
    assert not (out / "a.ood.png").exists()  # no threshold, no calibration: no mask


def test_json_reports_latency_and_score_statistics(model, inputs, tmp_path, capsys):
    code, stdout, _ = run([str(model), str(inputs / "a.png"), "--out", str(tmp_path / "o"), "--json",
                           "--score", "pgn_uni_p2", "--threshold", "5", "--backend", "ort-cpu"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["backend"] == "ort-cpu" and report["score"] == "pgn_uni_p2" and report["failed"] == []
    (entry,) = report["inputs"]
    assert set(entry["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
    assert set(entry["scores"]) == {"pgn_uni_p0.5", "pgn_uni_p2", "msp", "entropy"}
    assert entry["scores"]["msp"]["min"] <= entry["scores"]["msp"]["mean"] <= entry["scores"]["msp"]["max"]
    assert "uncalibrated" in entry["heatmap_range"]["source"] and 0.0 <= entry["ood_fraction"] <= 1.0
    assert isinstance(entry["instances"], int)


def test_a_video_runs_end_to_end(model, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    code, stdout, _ = run([str(model), str(video), "--out", str(out), "--json"], capsys)
    assert code == 0
    (entry,) = json.loads(stdout)["inputs"]
    assert entry["kind"] == "video" and entry["frames"] == 12
    capture = cv2.VideoCapture(str(out / "clip.overlay.mp4"))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames += 1
        assert frame.shape == (96, 64 + PANEL_WIDTH, 3)
    capture.release()
    assert frames == 12
    assert not list(out.glob(".*"))
    lines = (out / "clip.instances.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(12))
    assert not (out / "clip.masks").exists()  # no threshold: no masks


def test_a_video_gives_per_frame_masks_and_instances(model, tmp_path, capsys):
    from pgn_deploy.runtime import Runtime

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(1)
    for _ in range(4):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert run([str(model), str(video), "--out", str(out), "--threshold", "30", "--min-area", "1"], capsys)[0] == 0
    masks = sorted((out / "clip.masks").glob("*.png"))
    assert [p.name for p in masks] == [f"{i:06d}.png" for i in range(4)]
    records = [json.loads(line) for line in (out / "clip.instances.jsonl").read_text().splitlines()]
    capture = cv2.VideoCapture(str(video))
    runtime = Runtime(model, "ort-cpu")
    for path, record in zip(masks, records):
        ok, frame = capture.read()
        result = runtime.run(frame, color="BGR")
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, result.ood_mask(30.0) * 255)
        expected = [(i.label_id, i.area, list(i.box)) for i in result.instances(30.0, 1)]
        assert [(i["id"], i["area"], i["box"]) for i in record["instances"]] == expected
    capture.release()


def test_user_errors_are_one_line(model, inputs, tmp_path, capsys):
    plain = build_model(tmp_path / "plain.onnx", metadata=False)
    code, _, stderr = run([str(plain), str(inputs / "a.png"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "run pgn-export" in stderr and "Traceback" not in stderr
    code, _, stderr = run([str(model), str(inputs / "a.png"), "--out", str(tmp_path / "o"), "--score", "x"], capsys)
    assert code == 2 and "no score map 'x'" in stderr
    code, _, stderr = run([str(model), str(tmp_path / "missing"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such file or folder" in stderr


NO_TORCH_PRELUDE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "transformers"}:
            raise ImportError(f"{name} is blocked: this host has no PyTorch")
sys.meta_path.insert(0, Block())
"""


def test_runtime_and_pgn_run_work_without_pytorch(model, inputs, tmp_path):
    code = NO_TORCH_PRELUDE + textwrap.dedent(f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not work")
        import cv2
        from pgn_deploy.runtime import Runtime, calibrate
        from pgn_deploy.cli.run import main
        result = Runtime({str(model)!r}).run(cv2.imread({str(inputs / 'a.png')!r}), color="BGR")
        assert result.pred.shape == (40, 56)
        rc = main([{str(model)!r}, {str(inputs / 'a.png')!r}, "--out", {str(tmp_path / 'out')!r}, "--quiet"])
        assert rc == 0, rc
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "torchvision", "transformers"}}
                        or m.startswith("pgn_deploy.export"))
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
    assert (tmp_path / "out" / "a.overlay.png").is_file()


def test_a_calibrated_model_gives_default_masks_and_shared_heatmap_ranges(model, inputs, tmp_path, capsys):
    from pgn_deploy.runtime import calibrate

    calibrated = tmp_path / "calibrated.pgn.onnx"
    calibrate(model, [inputs / "a.png", inputs / "b.jpg"], calibrated, backend="ort-cpu")  # a copy
    out = tmp_path / "out"
    code, stdout, _ = run([str(calibrated), str(inputs / "a.png"), str(inputs / "deep"), "--out", str(out),
                           "--json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["threshold_source"] == "calibration"
    assert report["heatmap_source"] == "calibration: in-distribution percentile rank"
    ranges = {json.dumps(entry["heatmap_range"], sort_keys=True) for entry in report["inputs"]}
    assert len(ranges) == 1 and json.loads(ranges.pop())["calibrated"]
    assert (out / "a.ood.png").is_file() and (out / "c.ood.png").is_file()
