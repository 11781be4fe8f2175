"""pgn-eval end to end on SynthRoad written in every OoD layout: the tables of every map, the
cache (resume, fingerprints), the SMIYC files, and bad input (one line, exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgn_deploy.cli.eval import main as eval_main
from pgn_deploy.cli.metrics import main as metrics_main
from pgn_deploy.synthroad.layouts import LAYOUT_DIRS, write_synthroad
from tests.support.eval_models import grafted_model, save_checkpoint

FRAMES = 4
OOD_KINDS = {  # kind -> (dataset folder below the SynthRoad root, track)
    "road_anomaly21": ("", "anomaly"),
    "road_obstacle21": ("", "obstacle"),
    "lost_and_found": (LAYOUT_DIRS["lostandfound"], "obstacle"),
    "laf_noknown": (LAYOUT_DIRS["lostandfound"], "obstacle"),
    "fishyscapes_laf": (LAYOUT_DIRS["fishyscapes_laf"], "anomaly"),
}
GRAPH_MAPS = ["pgn_uni_p0.5", "pgn_uni_p2", "pgn_oh_p0.5", "pgn_oh_p2", "msp", "entropy"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "synthroad"
    write_synthroad(data, frames=FRAMES, seed=1, size=(64, 128), progress=False,
                    layouts=["roadanomaly21", "roadobstacle21", "lostandfound", "fishyscapes_laf"])
    checkpoint, model = grafted_model(root)
    return {"root": root, "data": data, "checkpoint": checkpoint, "model": model}


def dataset_arg(setup, kind: str) -> str:
    return f"{kind}:{setup['data'] / OOD_KINDS[kind][0]}"


def run_eval(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = eval_main([*map(str, argv), "--json", "--quiet"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def pgn_metrics(capsys, out: Path, kind: str, name: str, track: str) -> dict:
    """What pgn-metrics prints (--json) for the saved maps and labels of one map."""
    code = metrics_main(["--scores", str(out / "maps" / kind / name), "--labels", str(out / "labels" / kind),
                         "--track", track, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result.pop("method") == name
    return result


@pytest.mark.parametrize("kind", list(OOD_KINDS))
def test_ood_tables_equal_pgn_metrics_on_the_saved_maps(setup, capsys, kind):
    out = setup["root"] / f"out_{kind}"
    tta = ["--tta", "1,flip"] if kind == "lost_and_found" else []  # the maps of the TTA views are saved too
    code, report, err = run_eval(capsys, setup["model"], "--dataset", dataset_arg(setup, kind), "--out", out, *tta)
    assert code == 0, err
    assert report["header"]["tta"].startswith("scales 1 with horizontal flip" if tta else "off")
    track = OOD_KINDS[kind][1]
    table = report["tables"][0]
    assert [row["map"] for row in table["rows"]] == GRAPH_MAPS
    assert table["columns"] == ["AuPRC", "FPR95", "sIoU", "PPV", "mean_F1"]
    for row in table["rows"]:
        expected = pgn_metrics(capsys, out, kind, row["map"], track)
        assert report["details"]["maps"][row["map"]] == expected, row["map"]
        assert row["AuPRC"] == pytest.approx(100 * expected["AuPRC"])
    for suffix in ("report.md", "report.json", "pr.png", "roc.png"):
        assert (out / f"{kind}.{suffix}").stat().st_size > 0
    assert "pgn-eval " in (out / f"{kind}.report.md").read_text()
    assert not list(out.glob(".*")), "staging files left behind"


def test_baselines_from_the_same_run_and_resume_from_the_cache(setup, capsys):
    out = setup["root"] / "out_baselines"
    args = [setup["model"], "--dataset", dataset_arg(setup, "road_anomaly21"), "--out", out,
            "--checkpoint", setup["checkpoint"], "--mc-dropout", "3", "--ensemble", setup["checkpoint"],
            "--scores", "pgn_uni_p0.5,msp,entropy"]
    code, report, err = run_eval(capsys, *args)
    assert code == 0, err
    maps = ["pgn_uni_p0.5", "msp", "entropy", "mc_entropy", "mc_variance", "ens_entropy", "ens_msp"]
    assert [row["map"] for row in report["tables"][0]["rows"]] == maps
    assert report["timing"]["mc_dropout"]["frames"] == FRAMES
    assert "3 forward passes" in report["methods"]["mc_entropy"]["cost"]
    assert "1 network in memory" in report["methods"]["ens_msp"]["cost"]
    cache = out / "maps" / "road_anomaly21"
    for frame in (cache / "msp").glob("*.npy"):  # a one-member ensemble is the model itself
        np.testing.assert_allclose(np.load(cache / "ens_msp" / frame.name), np.load(frame), atol=1e-5)
        np.testing.assert_allclose(np.load(cache / "ens_entropy" / frame.name),
                                   np.load(cache / "entropy" / frame.name), atol=1e-5)
    assert report["details"]["maps"]["ens_msp"]["AuROC"] == pytest.approx(
        report["details"]["maps"]["msp"]["AuROC"], abs=1e-3)

    code, again, err = run_eval(capsys, *args)  # the report exists: refused, nothing recomputed
    assert code == 2 and "--force" in err and again is None
    code, again, err = run_eval(capsys, *args, "--binning", "smiyc", "--force")
    assert code == 0, err
    assert again["timing"] == {}  # everything came from the cache
    assert again["details"]["maps"]["mc_variance"]["binning"] == "smiyc"
    (cache / "mc_variance" / "synthroad_0002.npy").unlink()  # only the MC group of that frame reruns
    code, again, err = run_eval(capsys, *args, "--force")
    assert code == 0, err
    assert again["timing"]["mc_dropout"]["frames"] == 1 and "model" not in again["timing"]


def test_smiyc_submission_files_are_scaled_float16(setup, capsys, tmp_path):
    h5py = pytest.importorskip("h5py")
    out, smiyc = tmp_path / "out", tmp_path / "smiyc"
    code, report, err = run_eval(capsys, setup["model"], "--dataset", dataset_arg(setup, "laf_noknown"),
                                 "--out", out, "--smiyc-out", smiyc, "--scores", "pgn_uni_p2,msp")
    assert code == 0, err
    exponents = report["details"]["smiyc"]["exponents"]
    files = sorted(smiyc.glob("anomaly_p/*/LostAndFound-test/*.hdf5"))
    assert len(files) == 2 * 3  # two maps, the three frames test-NoKnown keeps
    for path in files:
        name = path.parent.parent.name
        with h5py.File(path, "r") as handle:
            value = handle["value"][:]
        assert value.dtype == np.float16 and np.isfinite(value).all()
        cached = np.load(out / "maps" / "laf_noknown" / name / f"{path.stem}.npy")
        np.testing.assert_allclose(value.astype(np.float32), np.ldexp(cached, exponents[name]), rtol=1e-3)
    assert max(np.abs(h5py.File(p, "r")["value"][:]).max() for p in files) > 65504 / 2


def test_a_cache_of_another_model_is_refused_unless_forced(setup, capsys, tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", dataset_arg(setup, "road_obstacle21"), "--out", out, "--scores", "msp"]
    assert run_eval(capsys, setup["model"], *args)[0] == 0
    _, other = grafted_model(tmp_path, seed=7)
    for report in out.glob("road_obstacle21.report.*"):
        report.unlink()
    code, _, err = run_eval(capsys, other, *args)
    assert code == 2 and "another model" in err and "--force" in err
    code, report, err = run_eval(capsys, other, *args, "--force")
    assert code == 0, err
    assert report["timing"]["model"]["frames"] == FRAMES


def test_a_variant_file_adds_rows_scored_on_the_same_pixels(setup, capsys, tmp_path):
    """--variant TAG=MODEL: another file's PGN maps become rows '<map> [TAG]'; a byte copy of the
    model gives exactly the model's own numbers, and a second other model different ones."""
    import shutil

    copy = tmp_path / "copy.pgn.onnx"
    shutil.copy(setup["model"], copy)
    _, other = grafted_model(tmp_path, seed=7)
    out = tmp_path / "out"
    code, report, err = run_eval(capsys, setup["model"], "--dataset", dataset_arg(setup, "road_anomaly21"),
                                 "--out", out, "--variant", f"copy={copy}", "--variant", f"other={other}")
    assert code == 0, err
    rows = {row["map"]: row for row in report["tables"][0]["rows"]}
    pgn = [m for m in GRAPH_MAPS if m.startswith("pgn_")]
    assert list(rows) == [*GRAPH_MAPS, *(f"{m}@copy" for m in pgn), *(f"{m}@other" for m in pgn)]
    for name in pgn:
        assert report["details"]["maps"][f"{name}@copy"] == report["details"]["maps"][name]
    assert any(rows[f"{m}@other"]["AuPRC"] != rows[m]["AuPRC"] for m in pgn)
    assert report["timing"]["variant copy"]["frames"] == FRAMES
    assert report["methods"]["pgn_oh_p0.5@copy"]["cost"].startswith("one forward pass of the copy file")
    assert "| PGN_oh p=0.5 [copy] |" in (out / "road_anomaly21.report.md").read_text()
    for text, message in ((f"copy {copy}", "expected TAG=MODEL"), ("int8=nowhere.onnx", "no such model file"),
                          (f"a={copy}", "given twice")):
        extra = ["--variant", text] + (["--variant", f"a={copy}"] if message == "given twice" else [])
        code, _, err = run_eval(capsys, setup["model"], "--dataset", dataset_arg(setup, "road_anomaly21"),
                                "--out", tmp_path / "bad", *extra)
        assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("case", ["missing_folder", "empty_folder", "unknown_kind", "unknown_map",
                                  "mc_without_checkpoint", "no_dropout_to_sample"])
def test_bad_input_one_line_exit_2_nothing_written(setup, capsys, tmp_path, case):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    dataset = dataset_arg(setup, "road_anomaly21")
    extra: list = []
    if case == "missing_folder":
        dataset = f"road_anomaly21:{tmp_path / 'nowhere'}"
    elif case == "empty_folder":
        dataset = f"road_obstacle21:{empty}"
    elif case == "unknown_kind":
        dataset = f"mars_rover:{setup['data']}"
    elif case == "unknown_map":
        extra = ["--scores", "pgn_uni_p0.5,pgn_gt_p3"]
    elif case == "mc_without_checkpoint":
        extra = ["--mc-dropout", "2"]
    else:
        extra = ["--checkpoint", save_checkpoint(tmp_path / "plain.pth", dropout=None), "--mc-dropout", "2"]
    code = eval_main([str(setup["model"]), "--dataset", dataset, "--out", str(out), "--quiet",
                      *map(str, extra)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pgn-eval: error: ") and err.count("\n") == 1 and "Traceback" not in err
    expected = {"missing_folder": "no such dataset folder", "empty_folder": "dataset_ObstacleTrack/images",
                "unknown_kind": "unknown dataset kind", "unknown_map": "has no map pgn_gt_p3",
                "mc_without_checkpoint": "--checkpoint", "no_dropout_to_sample": "no dropout layer"}[case]
    assert expected in err
    assert not out.exists()  # every one is found before any work: --out is not even created
