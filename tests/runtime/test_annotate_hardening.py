"""pgn-run against faults (issue 19): one image failing in inference or above --max-pixels is
skipped and reported (item 6), no NaN reaches the JSON and nonsense flags are refused (item 7),
an --out inside the input folder is never read back (item 15)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.run import main
from pgn_deploy.runtime import Runtime
from pgn_deploy.runtime.annotate import AnnotateOptions, annotate
from tests.support.runtime_models import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("model") / "tiny.pgn.onnx")


def _image(path, height, width, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_an_image_that_fails_in_inference_is_skipped_and_the_others_are_written(model, tmp_path, monkeypatch):
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        _image(tmp_path / "in" / f"{name}.png", 32, 40 + seed, seed)
    runtime = Runtime(model, "ort-cpu", max_batch=4)
    real_run = runtime.run

    def run(inputs, **kwargs):  # "b" (width 42) runs out of memory, alone or in a batch
        images = inputs if isinstance(inputs, list) else [inputs]
        if any(image.shape[1] == 42 for image in images):
            raise MemoryError("std::bad_alloc")
        return real_run(inputs, **kwargs)

    monkeypatch.setattr(runtime, "run", run)
    report = annotate(runtime, [tmp_path / "in"], tmp_path / "out", progress=False)
    assert sorted(r["input"].rsplit("/", 1)[1] for r in report.inputs) == ["a.png", "c.png"]
    assert len(report.failed) == 1 and "b.png" in report.failed[0]["error"]
    assert "out of memory" in report.failed[0]["error"]
    assert (tmp_path / "out" / "a.overlay.png").is_file() and (tmp_path / "out" / "c.overlay.png").is_file()
    assert not (tmp_path / "out" / "b.overlay.png").exists()


def test_frames_above_max_pixels_are_refused_before_inference(model, tmp_path, capsys):
    _image(tmp_path / "in" / "small.png", 20, 20, 1)
    _image(tmp_path / "in" / "big.png", 40, 60, 2)
    code = main([str(model), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--max-pixels", "1000",
                 "--json", "--backend", "ort-cpu"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1 and [r["input"].rsplit("/", 1)[1] for r in report["inputs"]] == ["small.png"]
    assert "40 x 60 = 2400 pixels is above the limit of 1000" in report["failed"][0]["error"]


def test_an_all_infinite_map_is_reported_not_flagged_and_the_json_has_no_nan(model, tmp_path, monkeypatch):
    _image(tmp_path / "in" / "a.png", 24, 24, 1)
    _image(tmp_path / "in" / "b.png", 24, 24, 2)
    runtime = Runtime(model, "ort-cpu", max_batch=1)
    real_run = runtime.run
    calls = []

    def run(inputs, **kwargs):
        results = real_run(inputs, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the second image: every map overflowed
            for result in (results if isinstance(results, list) else [results]):
                for name in result.scores:
                    result.scores[name][...] = np.inf
        return results

    monkeypatch.setattr(runtime, "run", run)
    report = annotate(runtime, [tmp_path / "in"], tmp_path / "out", AnnotateOptions(threshold=0.5), progress=False)
    assert len(report.inputs) == 1 and len(report.failed) == 1
    assert "non-finite" in report.failed[0]["error"]
    assert not (tmp_path / "out" / "b.ood.png").exists()
    text = json.dumps(report.to_json(), allow_nan=False)  # raises on NaN or infinity
    assert "NaN" not in text


def test_non_finite_values_become_null_in_the_report(model, tmp_path):
    from pgn_deploy.runtime.annotate import AnnotateReport

    report = AnnotateReport("ort-cpu", "s", None, "none", "x",
                            inputs=[{"scores": {"s": {"min": float("nan"), "max": float("inf")}}}])
    assert report.to_json()["inputs"][0]["scores"]["s"] == {"min": None, "max": None}


@pytest.mark.parametrize("flags", [["--threshold", "nan"], ["--threshold", "inf"], ["--batch", "0"],
                                   ["--threads", "-3"], ["--max-pixels", "0"], ["--min-area", "-1"]])
def test_nonsense_flags_are_refused(model, tmp_path, capsys, flags):
    _image(tmp_path / "a.png", 8, 8, 1)
    with pytest.raises(SystemExit) as info:
        main([str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *flags])
    assert info.value.code == 2 and flags[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_metrics_workers_must_be_positive(capsys):
    from pgn_deploy.cli.metrics import main as metrics_main

    with pytest.raises(SystemExit) as info:
        metrics_main(["--scores", "x", "--labels", "y", "--workers", "-3"])
    assert info.value.code == 2 and "--workers" in capsys.readouterr().err


def test_an_out_folder_inside_the_input_folder_is_never_read_back(model, tmp_path, capsys):
    _image(tmp_path / "in" / "a.png", 16, 16, 1)
    out = tmp_path / "in" / "results"
    args = [str(model), str(tmp_path / "in"), "--out", str(out), "--json", "--backend", "ort-cpu"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*args, "--force"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in second["inputs"]] == [r["input"] for r in first["inputs"]]
    assert sorted(p.name for p in out.iterdir()) == ["a.heatmap.png", "a.overlay.png", "a.seg.png"]
