"""pgn-eval on SynthRoad's Cityscapes layout: Table 1 (ECE, AuSE, AuSE as published) and Figure 3
(meta classification and regression) end to end, with the baselines of the same run."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pgn_deploy.cli.eval import main as eval_main
from pgn_deploy.eval.metrics.calibration import CalibrationAccumulator
from pgn_deploy.synthroad.layouts import LAYOUT_DIRS, write_synthroad
from tests.support.eval_models import grafted_model

FRAMES = 4
MAPS = ["pgn_uni_p0.5", "pgn_uni_p2", "pgn_oh_p0.5", "pgn_oh_p2", "msp", "entropy",
        "mc_entropy", "mc_variance", "ens_entropy", "ens_msp"]
FIGURE3 = ["msp", "entropy", "metaseg", "pgn_oh", "pgn_uni", "pgn", "metaseg+pgn"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("indist")
    write_synthroad(root / "data", frames=FRAMES, seed=2, size=(64, 128), layouts=["cityscapes"], progress=False)
    checkpoint, model = grafted_model(root)
    dataset = f"cityscapes:{root / 'data' / LAYOUT_DIRS['cityscapes']}"
    return {"root": root, "model": model, "checkpoint": checkpoint, "dataset": dataset}


@pytest.fixture(scope="module")
def report(run):
    code = eval_main([str(run["model"]), "--dataset", run["dataset"], "--out", str(run["root"] / "out"),
                      "--checkpoint", str(run["checkpoint"]), "--mc-dropout", "1", "--mc-rate", "0",
                      "--ensemble", str(run["checkpoint"]), "--folds", "2", "--quiet"])
    assert code == 0
    return json.loads((run["root"] / "out" / "cityscapes.report.json").read_text())


def rows(table: dict) -> dict[str, dict]:
    return {row["map"]: row for row in table["rows"]}


def test_table1_and_figure3_with_every_map_and_feature_set(run, report):
    table1, published, figure3 = report["tables"]
    assert list(rows(table1)) == MAPS and table1["columns"] == ["ECE", "AuSE", "AuSE_published"]
    assert list(rows(figure3)) == FIGURE3 and figure3["columns"] == ["AuROC", "R2"]
    assert "pgn_oh_p2" in rows(published)
    for name, row in rows(table1).items():
        if name == "mc_variance":  # one sample without dropout: a constant 0 map, no min-max ECE
            assert row["ECE"] is None and row["AuSE"] is not None
            continue
        assert 0 <= row["ECE"] <= 1 and row["AuSE"] is not None and row["AuSE_published"] is not None
    for row in rows(figure3).values():
        assert 0 <= row["AuROC"] <= 100
    meta = report["details"]["figure3"]["metaseg+pgn"]["classification"]
    assert meta["k"] == 2 and meta["seed"] == 0 and meta["images"] == FRAMES
    for name in ("report.md", "report.json", "sparsification.png", "figure3.png"):
        assert (run["root"] / "out" / f"cityscapes.{name}").stat().st_size > 0


def test_baselines_without_sampling_equal_the_model_rows(report):
    table1 = rows(report["tables"][0])
    for baseline, model_map in (("mc_entropy", "entropy"), ("ens_entropy", "entropy"), ("ens_msp", "msp")):
        for column in ("ECE", "AuSE", "AuSE_published"):
            assert table1[baseline][column] == pytest.approx(table1[model_map][column], abs=2e-4), (baseline, column)
    assert "all scores equal 0" in report["details"]["maps"]["mc_variance"]["ece"]["undefined"]


def test_ece_of_the_cached_maps_recomputed(run, report):
    cache = run["root"] / "out" / "maps" / "cityscapes"
    accumulator = CalibrationAccumulator("none")
    for path in sorted((cache / "msp").glob("*.npy")):
        city = path.stem.split("_")[0]
        label = run["dataset"].split(":", 1)[1] + f"/gtFine/val/{city}/{path.stem}_gtFine_labelTrainIds.png"
        gt = cv2.imread(label, cv2.IMREAD_UNCHANGED)
        accumulator.add(np.clip(1.0 - np.load(path), 0.0, 1.0), np.load(cache / "pred" / path.name), gt)
    assert accumulator.result().ece == pytest.approx(rows(report["tables"][0])["msp"]["ECE"], rel=1e-12)


@pytest.mark.parametrize("extra,message", [(["--folds", "5"], "5-fold cross validation"),
                                           (["--folds", "2", "--smiyc-out", "smiyc"], "OoD datasets")])
def test_cityscapes_bad_requests_fail_before_any_work(run, capsys, tmp_path, extra, message):
    out = tmp_path / "out"
    code = eval_main([str(run["model"]), "--dataset", run["dataset"], "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()
