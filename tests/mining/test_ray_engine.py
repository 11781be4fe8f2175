"""The Ray engine against the local one, on a two-node Ray cluster simulated on this machine.

One cluster (``ray.cluster_utils.Cluster``: a head and one worker node, one CPU each, so each
of the two actors lands on its own node) serves the whole module: Ray's start-up is slow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pgn_deploy.mining import MineOptions, mine

ray = pytest.importorskip("ray", reason="the mine extra (ray[data]) is not installed")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _options(frame_set: dict, **extra) -> MineOptions:
    return MineOptions(threshold=frame_set["threshold"], min_area=3, top=4, every=2, batch=3, threads=1, **extra)


def _sources(frame_set: dict) -> list[Path]:
    return [frame_set["root"] / "imgs", frame_set["video"][0]]


def test_ray_gives_the_local_rows_and_uses_both_nodes(two_nodes, frame_set: dict, tmp_path: Path) -> None:
    local = mine(frame_set["model"], _sources(frame_set), tmp_path / "local", _options(frame_set))
    remote = mine(frame_set["model"], _sources(frame_set), tmp_path / "ray", _options(frame_set, engine="ray",
                                                                                       workers=2))
    assert (remote.processed, remote.failed) == (local.processed, local.failed) == (15, 2)

    def table(folder: str, name: str) -> dict:
        return pq.read_table(Path(folder) / f"{name}.parquet").to_pydict()

    ours, theirs = table(local.out_dir, "frames"), table(remote.out_dir, "frames")
    for column in ("source", "frame", "rank", "instances", "height", "width", "model_sha256"):
        assert ours[column] == theirs[column], column
    np.testing.assert_allclose(theirs["score"], ours["score"], rtol=1e-6)
    assert max(ours["score"]) > 1.0  # the threshold finds instances: the ranking is not all ties
    ours, theirs = table(local.out_dir, "instances"), table(remote.out_dir, "instances")
    for column in ("source", "frame", "instance", "area", "x", "y", "w", "h"):
        assert ours[column] == theirs[column], column
    for column in ("mean_score", "max_score"):
        np.testing.assert_allclose(theirs[column], ours[column], rtol=1e-6)
    assert table(local.out_dir, "failures") == table(remote.out_dir, "failures")
    assert sorted(table(remote.out_dir, "failures")["source"]) == sorted(str(p) for p in frame_set["corrupt"])

    node_ids = {node["NodeID"][:12] for node in ray.nodes() if node["Alive"]}
    workers = set(table(remote.out_dir, "frames")["worker"])
    assert len(node_ids) == 2
    assert workers == {f"ray:{node}" for node in node_ids}  # each node's actor mined frames


def test_ray_resumes_a_local_run(two_nodes, frame_set: dict, tmp_path: Path) -> None:
    first = mine(frame_set["model"], [frame_set["root"] / "imgs"], tmp_path, _options(frame_set))
    second = mine(frame_set["model"], _sources(frame_set), tmp_path, _options(frame_set, engine="ray", workers=1))
    assert (first.processed, second.skipped) == (12, 10)  # 10 good images done; 2 corrupt ones tried again
    assert second.processed == 2 + 3  # the corrupt images and the video's frames 0, 2, 4
    assert second.frames == 13


def test_an_actor_that_cannot_start_fails_the_run_in_one_line(two_nodes, frame_set: dict, tmp_path: Path) -> None:
    from pgn_deploy.contract import PGNError
    from pgn_deploy.mining.frame_scoring import MiningRule
    from pgn_deploy.mining.ray_engine import run_ray
    from pgn_deploy.mining.sources import FrameRef
    from pgn_deploy.mining.store import MiningStore

    rule = MiningRule("pgn_uni_p0.5", frame_set["threshold"], "given", 3, "0" * 64)  # not the file's sha256
    store = MiningStore.open(tmp_path, rule)
    with pytest.raises(PGNError, match="not the model the driver hashed"):
        run_ray(str(frame_set["model"]), [FrameRef(str(frame_set["good"][0]), 0)], rule, store, batch=1, workers=1,
                threads=1, num_gpus=0.0, backend="ort-cpu", address=None)


def test_blocks_hold_several_batches_yet_every_worker_gets_several() -> None:
    from pgn_deploy.mining.ray_engine import BATCHES_PER_BLOCK, BLOCKS_PER_WORKER, MAX_BLOCKS, block_count

    assert block_count(256, 4, 2) == 64 // BATCHES_PER_BLOCK == 8  # 64 batches, 8 to a block
    assert block_count(256, 4, 4) == 4 * BLOCKS_PER_WORKER  # more workers: smaller blocks
    assert block_count(16, 4, 2) == 4  # never more blocks than batches
    assert block_count(1, 4, 8) == 1
    assert block_count(10**7, 8, 2) == MAX_BLOCKS
