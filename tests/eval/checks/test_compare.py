"""compare_models (pgn-check --against) through Polygraphy's Comparator, on ONNX Runtime CPU."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pgn_deploy.contract import BadInputError, read_metadata
from pgn_deploy.eval.checks.compare import compare_models, pred_agreement, relative_error
from tests.support.engine_models import SIZE, grafted, images


def test_metrics():
    a = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a + np.float32(0.04)) == pytest.approx(0.01)
    assert relative_error(a, np.where(a > 3, np.inf, a)) == float("inf")
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert pred_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 75.0
    with pytest.raises(BadInputError):
        relative_error(np.zeros(3), np.zeros(4))


def test_fp32_against_fp16_on_images(tmp_path):
    for i, image in enumerate(images(2)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image[..., ::-1])
    report = compare_models(grafted("tiny"), grafted("tiny", "fp16"), images=[tmp_path])
    meta = read_metadata(grafted("tiny"))
    rows = {row.name: row for row in report.outputs}
    assert report.images == 2 and report.passed
    assert set(rows) == {*meta.score_outputs, meta.pred, meta.head.logits_output}
    assert rows[meta.pred].metric == "agreement_%" and rows[meta.pred].value >= 99.9
    assert all(rows[n].metric == "relative_error" and 0 < rows[n].value <= 1e-2 for n in meta.pgn_outputs)
    assert report.runner_a.startswith("ort:") and report.runner_b.startswith("ort:")
    assert report.to_json()["passed"] is True


def test_different_models_fail_with_per_output_tolerances():
    """Two unrelated networks with the same outputs: the verdicts fail; a per-output tolerance
    loose enough for one map makes only that one pass."""
    report = compare_models(grafted("tiny"), grafted("bigpsi"), synthetic=1, size=SIZE)
    assert not report.passed
    loose = compare_models(grafted("tiny"), grafted("bigpsi"), synthetic=1, size=SIZE,
                           tolerances={"pgn_uni_p1": 1e9})
    rows = {row.name: row for row in loose.outputs}
    assert rows["pgn_uni_p1"].passed and rows["pgn_uni_p1"].tolerance == 1e9
    assert not rows["pgn_uni_p2"].passed


def test_bad_arguments(tmp_path):
    with pytest.raises(BadInputError, match="not compared"):
        compare_models(grafted("tiny"), grafted("tiny", "fp16"), tolerances={"nope": 1.0})
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"")
    with pytest.raises(BadInputError, match="reference"):
        compare_models(plan, grafted("tiny"))


def test_pgn_check_against(capsys):
    import json

    from pgn_deploy.cli import check

    size = f"1x3x{SIZE[0]}x{SIZE[1]}"
    assert check.main([str(grafted("tiny")), "--against", str(grafted("tiny", "fp16")), "--input-shape", size,
                       "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] and data["images"] == 2
    assert check.main([str(grafted("tiny")), "--against", str(grafted("bigpsi")), "--samples", "1",
                       "--input-shape", size]) == 1
    assert capsys.readouterr().out.strip().endswith("FAIL")
