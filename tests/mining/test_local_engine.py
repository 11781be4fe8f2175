"""pgn-mine with the local engine: the frame rule, failures, resumption, refusals, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pgn_deploy.cli.mine import main
from pgn_deploy.contract import ArtifactExistsError, BadInputError
from pgn_deploy.mining import MineOptions, mine
from pgn_deploy.mining.sources import FrameRef, expand_sources
from pgn_deploy.runtime.runner import Runtime
from tests.mining.frames import VIDEO_FRAMES, tiny_model

MIN_AREA = 3


def _options(frame_set: dict, **extra) -> MineOptions:
    settings = {"threshold": frame_set["threshold"], "min_area": MIN_AREA, "top": 4, "batch": 3, **extra}
    return MineOptions(**settings)


def _table(folder: str | Path, name: str) -> dict:
    return pq.read_table(Path(folder) / f"{name}.parquet").to_pydict()


def _expected(runtime: Runtime, image_path: Path, threshold: float) -> dict:
    """The frame's record recomputed here: components with OpenCV, the rule with numpy."""
    score = runtime.run(cv2.imread(str(image_path)), color="BGR").score()
    mask = (score >= np.float32(threshold)).astype(np.uint8)
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    regions = [labels == label for label in range(1, count)]
    regions = sorted((r for r in regions if r.sum() >= MIN_AREA), key=lambda r: np.flatnonzero(r)[0])  # raster
    if not regions:
        return {"score": 0.0, "instances": 0, "areas": [], "max": []}
    largest = max(regions, key=lambda r: r.sum())  # the first of equal areas
    return {"score": float(score[largest].astype(np.float64).mean() / threshold), "instances": len(regions),
            "areas": sorted(int(r.sum()) for r in regions), "max": sorted(float(score[r].max()) for r in regions)}


def test_rows_follow_the_frame_rule(frame_set: dict, tmp_path: Path) -> None:
    report = mine(frame_set["model"], [frame_set["root"] / "imgs"], tmp_path, _options(frame_set))
    assert (report.processed, report.skipped, report.failed) == (12, 0, 2)
    frames, instances = _table(tmp_path, "frames"), _table(tmp_path, "instances")
    runtime = Runtime(frame_set["model"], "ort-cpu")
    assert sorted(frames["source"]) == sorted(str(p) for p in frame_set["good"])
    for index, source in enumerate(frames["source"]):
        want = _expected(runtime, Path(source), frame_set["threshold"])
        assert frames["score"][index] == pytest.approx(want["score"], rel=1e-9)
        assert frames["instances"][index] == want["instances"]
        mine_rows = [i for i, s in enumerate(instances["source"]) if s == source]
        assert sorted(instances["area"][i] for i in mine_rows) == want["areas"]
        np.testing.assert_allclose(sorted(instances["max_score"][i] for i in mine_rows), want["max"], rtol=1e-6)
        assert (frames["height"][index], frames["width"][index]) == (48, 64)
    assert frames["rank"] == list(range(1, 11))
    assert frames["score"] == sorted(frames["score"], reverse=True)
    assert sum(frames["instances"]) == len(instances["source"]) > 0
    assert set(frames["model_sha256"]) == {report.rule["model_sha256"]}
    failures = _table(tmp_path, "failures")
    assert sorted(failures["source"]) == sorted(str(p) for p in frame_set["corrupt"])
    assert all(error.startswith(source) for source, error in zip(failures["source"], failures["error"]))


def test_resume_mines_only_new_frames(frame_set: dict, tmp_path: Path) -> None:
    first = mine(frame_set["model"], [frame_set["good"][0], frame_set["good"][1]], tmp_path, _options(frame_set))
    assert (first.processed, first.skipped) == (2, 0)
    sources = [frame_set["root"] / "imgs", frame_set["video"][0]]
    second = mine(frame_set["model"], sources, tmp_path, _options(frame_set, every=2))
    assert (second.processed, second.skipped, second.failed) == (10 - 2 + 2 + 3, 2, 2)
    third = mine(frame_set["model"], sources, tmp_path, _options(frame_set, every=2))
    assert (third.processed, third.skipped, third.failed) == (2, 13, 2)  # only the corrupt files again
    frames = _table(tmp_path, "frames")
    assert len(frames["source"]) == len(set(zip(frames["source"], frames["frame"]))) == 13
    video = str(frame_set["video"][0])
    assert sorted(f for s, f in zip(frames["source"], frames["frame"]) if s == video) == [0, 2, 4]
    assert len(list((tmp_path / "parts").rglob("*.parquet"))) == 1  # compacted


def test_a_part_cut_short_by_a_kill_is_mined_again(frame_set: dict, tmp_path: Path) -> None:
    mine(frame_set["model"], [frame_set["root"] / "imgs"], tmp_path, _options(frame_set))
    (part,) = (tmp_path / "parts").glob("*.parquet")
    whole = pq.read_table(part)
    cut = tmp_path / "parts" / "local-killed-000001.parquet"
    pq.write_table(whole.slice(0, 3), cut)
    cut.write_bytes(cut.read_bytes()[:-40])  # no footer: what kill -9 leaves mid-write
    pq.write_table(whole.slice(3), part)  # the rows of the cut part are lost
    (tmp_path / "parts" / ".local-x.parquet.tmp").write_bytes(b"partial")  # atomic_write's temporary
    report = mine(frame_set["model"], [frame_set["root"] / "imgs"], tmp_path, _options(frame_set))
    assert report.discarded == [str(cut)]
    lost = {(s, f) for s, f, e in zip(*(whole.slice(0, 3).column(c).to_pylist() for c in ("source", "frame", "error")))
            if e is None}
    assert report.processed == len(lost) + 2  # the lost frames and the corrupt files
    assert report.frames == 10


def test_another_model_is_refused_without_force(frame_set: dict, tmp_path: Path) -> None:
    mine(frame_set["model"], [frame_set["good"][0]], tmp_path, _options(frame_set))
    other = tiny_model(tmp_path.parent / f"{tmp_path.name}-other.pgn.onnx", seed=1)
    with pytest.raises(ArtifactExistsError, match="another model"):
        mine(other, [frame_set["good"][0]], tmp_path, _options(frame_set))
    with pytest.raises(ArtifactExistsError, match="threshold"):
        mine(frame_set["model"], [frame_set["good"][0]], tmp_path, _options(frame_set, threshold=1.0))
    report = mine(other, [frame_set["good"][1]], tmp_path, _options(frame_set, force=True))
    assert (report.processed, report.frames) == (1, 1)
    assert _table(tmp_path, "frames")["source"] == [str(frame_set["good"][1])]


def test_source_lists_and_video_sampling(frame_set: dict, tmp_path: Path) -> None:
    root, video = frame_set["root"], frame_set["video"][0]
    listed = tmp_path / "list.csv"
    pcsv.write_csv(pa.table({"path": [str(video), "../" + root.name + "/imgs/frame000.png"], "frame": [5, 0]}),
                   listed)
    moved = root / "list.csv"
    listed.replace(moved)
    assert expand_sources([moved]) == [FrameRef(str(video), 5), FrameRef(str(root / "imgs" / "frame000.png"), 0)]
    plain = root / "list.parquet"
    pq.write_table(pa.table({"path": ["video.avi"]}), plain)
    assert expand_sources([plain], every=4) == [FrameRef(str(video), 0), FrameRef(str(video), 4)]
    assert len(expand_sources([video])) == VIDEO_FRAMES
    report = mine(frame_set["model"], [moved], tmp_path / "out", _options(frame_set))
    assert sorted(zip(*(_table(report.out_dir, "frames")[c] for c in ("source", "frame")))) == sorted(
        [(str(video), 5), (str(root / "imgs" / "frame000.png"), 0)])
    with pytest.raises(BadInputError, match="column 'path'"):
        pq.write_table(pa.table({"file": ["x.png"]}), tmp_path / "bad.parquet")
        expand_sources([tmp_path / "bad.parquet"])
    with pytest.raises(BadInputError, match="no such file"):
        expand_sources([tmp_path / "missing.png"])


def test_cli_json_summary_and_errors(frame_set: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [str(frame_set["model"]), str(frame_set["root"] / "imgs"), "--out", str(tmp_path),
            "--threshold", str(frame_set["threshold"]), "--min-area", str(MIN_AREA), "--top", "2"]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["processed"], summary["skipped"], summary["failed"]) == (12, 0, 2)
    assert "frame/s" not in captured.err  # no progress bar off a terminal
    assert main(args) == 0
    assert "2 frame(s) mined (2 failed), 10 skipped" in capsys.readouterr().out  # the corrupt ones again
    assert main([*args, "--ray-address", "auto"]) == 2
    assert capsys.readouterr().err.strip() == "pgn-mine: error: --ray-address needs --engine ray"
    assert main(["missing.onnx", "x", "--out", str(tmp_path)]) == 2
    assert main([*args[:3], str(tmp_path / "elsewhere")]) == 2  # uncalibrated model, no --threshold
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("pgn-mine: error: ") for line in err)
    assert "pgn-calibrate" in err[1]


def test_the_local_engine_never_imports_ray(frame_set: dict, tmp_path: Path) -> None:
    code = ("import sys; from pgn_deploy.mining import MineOptions, mine; "
            f"mine({str(frame_set['model'])!r}, [{str(frame_set['good'][0])!r}], {str(tmp_path)!r}, "
            f"MineOptions(threshold={frame_set['threshold']})); assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_kill_9_loses_only_the_frames_in_flight(frame_set: dict, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    image = cv2.imread(str(frame_set["good"][0]))
    for index in range(300):
        cv2.imwrite(str(folder / f"{index:04d}.png"), np.roll(image, index, axis=1))
    out = tmp_path / "mined"
    command = [sys.executable, "-m", "pgn_deploy.cli.mine", str(frame_set["model"]), str(folder), "--out", str(out),
               "--threshold", str(frame_set["threshold"]), "--batch", "1", "--workers", "1"]
    root = Path(__file__).resolve().parents[2]
    victim = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while len(list((out / "parts").glob("local-*.parquet"))) < 5 and victim.poll() is None:
            time.sleep(0.005)
    finally:
        victim.kill()  # SIGKILL: no cleanup runs
        victim.wait()
    assert victim.returncode == -9 and not (out / "frames.parquet").exists(), "the run ended before the kill"
    committed = sum(pq.read_table(p).num_rows for p in (out / "parts").glob("local-*.parquet"))
    result = subprocess.run([*command, "--json"], cwd=root, check=True, capture_output=True, text=True)
    summary = json.loads(result.stdout)
    assert (summary["skipped"], summary["processed"], summary["frames"]) == (committed, 300 - committed, 300)
    frames = _table(out, "frames")
    assert sorted(frames["source"]) == sorted(str(p) for p in folder.iterdir())


def test_loading_keeps_the_first_success_else_the_last_failure() -> None:
    from pgn_deploy.mining.store import _kept_rows

    table = pa.table({"source": ["a", "a", "b", "b", "c", "c", "a"], "frame": [0, 0, 0, 0, 0, 0, 1],
                      "error": ["x", None, "y1", "y2", None, None, "z"]})
    assert _kept_rows(table).to_pylist() == [1, 3, 4, 6]
