"""The map cache of pgn-eval never passes off foreign maps (issue 19 item 3) and recovers from
truncated or empty arrays (item 4): every cached map is proven by the stamp written with it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pgn_deploy.eval.paper.inference import MapCache
from tests.eval.paper.test_pipeline import dataset_arg, run_eval, setup  # noqa: F401 - the module fixture
from tests.support.eval_models import grafted_model


def _tables(report: dict) -> list:
    return report["tables"]


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):  # noqa: F811 - pytest's fixture argument
    """The report of the model on road_obstacle21, and a second model's cache of the same frames."""
    root = tmp_path_factory.mktemp("proof")
    _, other = grafted_model(root, seed=7)
    args = ["--dataset", dataset_arg(setup, "road_obstacle21"), "--scores", "msp,entropy", "--json", "-q"]
    from pgn_deploy.cli.eval import main

    assert main([str(setup["model"]), "--out", str(root / "mine"), *args]) == 0
    assert main([str(other), "--out", str(root / "other"), *args]) == 0
    return root, args


def test_foreign_maps_without_fingerprints_are_recomputed_not_reported(setup, runs, capsys):  # noqa: F811
    root, args = runs
    capsys.readouterr()
    mine = json.loads((root / "mine" / "road_obstacle21.report.json").read_text())
    out = root / "attacked"
    shutil.copytree(root / "mine", out)
    cache = out / "maps" / "road_obstacle21"
    (cache / "fingerprints.json").unlink()
    for name in ("msp", "entropy", "pred"):  # the other model's maps, with and without their stamps
        for path in (root / "other" / "maps" / "road_obstacle21" / name).glob("*.npy"):
            shutil.copy(path, cache / name / path.name)
            if path.stem.endswith("1"):
                shutil.copy(path.with_name(path.name + ".json"), cache / name / (path.name + ".json"))
    code, report, err = run_eval(capsys, setup["model"], *args[:2], "--scores", "msp,entropy", "--out", out,
                                 "--force")
    assert code == 0, err
    assert report["timing"]["model"]["frames"] == 4, "every foreign map must be recomputed"
    assert _tables(report) == _tables(mine)
    other = json.loads((root / "other" / "road_obstacle21.report.json").read_text())
    assert _tables(other) != _tables(mine), "the test needs two models that score differently"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage_stamp"])
def test_truncated_or_empty_cached_maps_are_recomputed(setup, runs, capsys, damage):  # noqa: F811
    root, args = runs
    capsys.readouterr()
    mine = json.loads((root / "mine" / "road_obstacle21.report.json").read_text())
    out = root / f"damaged_{damage}"
    shutil.copytree(root / "mine", out)
    victim = sorted((out / "maps" / "road_obstacle21" / "msp").glob("*.npy"))[0]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.with_name(victim.name + ".json").write_text("{not json")
    code, report, err = run_eval(capsys, setup["model"], *args[:2], "--scores", "msp,entropy", "--out", out,
                                 "--force")
    assert code == 0, err
    assert report["timing"]["model"]["frames"] == 1
    assert _tables(report) == _tables(mine)


def test_a_map_loads_only_for_its_producer_and_frame(tmp_path):
    cache = MapCache(tmp_path)
    cache.claim({"msp": {"model": "a"}})
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.save({"msp": array}, "f1", "image-sha-1")
    np.testing.assert_array_equal(cache.load(["msp"], "f1", "image-sha-1")["msp"], array)
    assert cache.load(["msp"], "f1", "image-sha-2") is None  # another image under the same id
    shutil.copy(tmp_path / "msp" / "f1.npy", tmp_path / "msp" / "f2.npy")
    shutil.copy(tmp_path / "msp" / "f1.npy.json", tmp_path / "msp" / "f2.npy.json")
    assert cache.load(["msp"], "f2", "image-sha-1") is None  # a stamp proves one frame id
    other = MapCache(tmp_path)
    other.claim({"msp": {"model": "b"}}, force=True)
    assert other.load(["msp"], "f1", "image-sha-1") is None


def _tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("existing_out", [True, False])
def test_a_corrupt_image_leaves_out_as_it_was(setup, runs, capsys, tmp_path, existing_out):  # noqa: F811
    """Issue 19 item 11: a corrupt image in the data set stops the run with one line and
    leaves --out as it was (no partial labels/ or maps/)."""
    root, args = runs
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    images = sorted((data / "dataset_ObstacleTrack" / "images").iterdir())
    images[-1].write_bytes(b"\xff\xd8 not a jpeg")  # the last frame: earlier ones are computed first
    out = tmp_path / "out"
    if existing_out:
        shutil.copytree(root / "mine", out)
        for report in out.glob("road_obstacle21.report.*"):
            report.unlink()
        shutil.rmtree(out / "maps" / "road_obstacle21" / "entropy")  # so that this run computes maps
        before = _tree(out)
    code, _, err = run_eval(capsys, setup["model"], "--dataset", f"road_obstacle21:{data}", "--scores",
                            "msp,entropy", "--out", out)
    assert code == 2 and "cannot read the image" in err and len(err.strip().splitlines()) == 1, err
    if existing_out:
        assert _tree(out) == before
    else:
        assert not out.exists()


def test_cache_files_get_the_umask_modes(tmp_path):
    """Issue 19 item 9: cache files were 0600 (mkstemp); a server of another user reads them."""
    import os

    previous = os.umask(0o022)
    try:
        MapCache(tmp_path).save({"msp": np.zeros((2, 2), np.float32)}, "f1", "sha")
    finally:
        os.umask(previous)
    assert (tmp_path / "msp" / "f1.npy").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "msp" / "f1.npy.json").stat().st_mode & 0o777 == 0o644
