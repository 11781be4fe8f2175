"""pgn-bench and its API: pruned variants, statistics on a fake timer, the CLI. Correctness only:
no assertion here depends on how fast anything runs."""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pgn_deploy.benchmark import (
    PeakMemory,
    keep_outputs,
    latency_stats,
    median_ratio,
    plain_model,
    time_calls,
    time_interleaved,
)
from pgn_deploy.benchmark.bench import BenchConfig, parse_maps
from pgn_deploy.benchmark.memory import rss_mb
from pgn_deploy.cli.bench import main
from pgn_deploy.contract import METADATA_KEY, BadInputError, PGNSpec, read_metadata, save_onnx
from pgn_deploy.engines.subgraph import split_nodes
from pgn_deploy.graft.attach import graft
from tests.support.runtime_models import plain_model as tiny_plain_model

SPEC = PGNSpec(p=(0.5, 2.0), labels=("uni", "oh"), pred=True, baselines=True)


@pytest.fixture(scope="module")
def grafted() -> onnx.ModelProto:
    return graft(tiny_plain_model(), SPEC)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, grafted) -> Path:
    return save_onnx(grafted, tmp_path_factory.mktemp("bench") / "tiny.pgn.onnx")


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))


def image(shape=(2, 3, 24, 40)) -> np.ndarray:
    return np.random.default_rng(3).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- pruned variants
def test_plain_model_keeps_only_the_network_and_its_outputs_bit_identical(grafted):
    meta = read_metadata(grafted)
    network, added = split_nodes(grafted, meta)
    plain = plain_model(grafted)
    onnx.checker.check_model(plain, full_check=True)
    assert [o.name for o in plain.graph.output] == meta.original_outputs
    assert [n.name for n in plain.graph.node] == [n.name for n in network]
    assert added and not {n.name for n in added} & {n.name for n in plain.graph.node}
    assert not any(prop.key == METADATA_KEY for prop in plain.metadata_props)
    used = {i for n in plain.graph.node for i in n.input}
    assert all(init.name in used for init in plain.graph.initializer)
    x = {"input": image()}
    full, pruned = run_onnx(grafted, x), run_onnx(plain, x)
    for name in meta.original_outputs:
        assert np.array_equal(full[name], pruned[name])


def test_plain_model_drops_the_gt_input():
    model = graft(tiny_plain_model(), PGNSpec(p=(1.0,), labels=("gt", "uni"), form="exact"))
    assert "pgn_gt" in [i.name for i in model.graph.input]
    plain = plain_model(model)
    assert [i.name for i in plain.graph.input] == ["input"]
    kept = keep_outputs(model, ["pgn_uni_p1"])
    assert [i.name for i in kept.graph.input] == ["input"] and read_metadata(kept).gt_input is None
    with_gt = keep_outputs(model, ["pgn_gt_p1"])
    assert "pgn_gt" in [i.name for i in with_gt.graph.input] and read_metadata(with_gt).gt_input == "pgn_gt"


def test_keep_outputs_prunes_the_other_maps_and_updates_the_metadata(grafted):
    kept = keep_outputs(grafted, ["pgn_oh_p2", "msp"])
    onnx.checker.check_model(kept, full_check=True)
    assert [o.name for o in kept.graph.output] == ["logits", "pgn_oh_p2", "msp"]
    meta = read_metadata(kept)
    assert (meta.pgn_outputs, meta.baselines, meta.pred) == (["pgn_oh_p2"], ["msp"], None)
    assert len(kept.graph.node) < len(grafted.graph.node)
    x = {"input": image()}
    full, pruned = run_onnx(grafted, x), run_onnx(kept, x)
    for name in ("logits", "pgn_oh_p2", "msp"):
        assert np.array_equal(full[name], pruned[name])


def test_keeping_one_map_of_several_gives_the_one_map_graft(grafted):
    def ops(model: onnx.ModelProto) -> list[str]:
        return sorted(n.op_type for n in model.graph.node)

    kept = keep_outputs(grafted, ["pgn_uni_p0.5"])
    assert ops(kept) == ops(graft(tiny_plain_model(), PGNSpec(p=(0.5,))))
    x = {"input": image()}
    assert np.array_equal(run_onnx(grafted, x)["pgn_uni_p0.5"], run_onnx(kept, x)["pgn_uni_p0.5"])


def test_keep_outputs_refuses_unknown_and_original_names(grafted):
    with pytest.raises(BadInputError, match="no added output pgn_uni_p7"):
        keep_outputs(grafted, ["pgn_uni_p7"])
    with pytest.raises(BadInputError, match="logits"):
        keep_outputs(grafted, ["logits"])
    with pytest.raises(BadInputError):
        keep_outputs(grafted, [])


# ----------------------------------------------------------------------------- timing and stats
class FakeClock:
    """A clock that advances only when a fake call runs: call ``k`` of a variant takes
    ``cost[name] * (k + 1)`` seconds."""

    def __init__(self, cost: dict[str, float]) -> None:
        self.now, self.cost, self.log = 0.0, cost, []
        self.count = {name: 0 for name in cost}

    def __call__(self) -> float:
        return self.now

    def call(self, name: str):
        def run() -> None:
            self.log.append(name)
            self.count[name] += 1
            self.now += self.cost[name] * self.count[name]
        return run


def test_interleaved_rounds_alternate_order_and_pair_samples():
    clock = FakeClock({"a": 1.0, "b": 10.0})
    samples = time_interleaved({"a": clock.call("a"), "b": clock.call("b")}, warmup=1, rounds=3, clock=clock, settle=0)
    assert clock.log == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [2.0, 3.0, 4.0], "b": [20.0, 30.0, 40.0]}


def test_each_timed_call_follows_an_untimed_call_of_its_own_variant():
    clock = FakeClock({"a": 1.0, "b": 10.0})
    samples = time_interleaved({"a": clock.call("a"), "b": clock.call("b")}, warmup=0, rounds=2, clock=clock)
    assert clock.log == ["a", "a", "b", "b", "b", "b", "a", "a"]
    assert samples == {"a": [2.0, 4.0], "b": [20.0, 40.0]}  # calls 2 and 4 of each: the settled ones


def test_a_single_variant_is_not_settled():
    clock = FakeClock({"x": 1.0})
    assert time_interleaved({"x": clock.call("x")}, warmup=0, rounds=2, clock=clock, settle=3) == {"x": [1.0, 2.0]}


def test_duration_stops_after_the_first_call_past_the_budget():
    clock = FakeClock({"x": 1.0})
    samples = time_calls(clock.call("x"), warmup=0, duration_s=5.5, clock=clock)
    assert samples == [1.0, 2.0, 3.0]  # 1 + 2 + 3 = 6 s >= 5.5 s


@pytest.mark.parametrize("kwargs", [{}, {"rounds": 2, "duration_s": 1.0}, {"rounds": 0}, {"duration_s": -1.0},
                                    {"rounds": 1, "settle": -1}])
def test_budget_must_be_one_positive_limit(kwargs):
    with pytest.raises(BadInputError):
        time_interleaved({"x": lambda: None}, **kwargs)


def test_latency_stats_in_milliseconds():
    stats = latency_stats([k / 1000 for k in range(1, 101)])  # 1..100 ms
    assert (stats.n, stats.min_ms, stats.max_ms) == (100, pytest.approx(1.0), pytest.approx(100.0))
    assert stats.median_ms == pytest.approx(50.5)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    with pytest.raises(BadInputError):
        latency_stats([])


def test_median_ratio_cancels_noise_shared_by_the_pair():
    noise = np.random.default_rng(0).uniform(1.0, 3.0, 41)  # a machine slowing down and up
    ratio = median_ratio(1.05 * noise, noise)
    assert ratio.value == pytest.approx(1.05)
    assert ratio.low == pytest.approx(1.05) and ratio.high == pytest.approx(1.05)
    assert ratio.overhead_percent == pytest.approx(5.0)
    spread = median_ratio(noise[::-1] * 1.05, noise)  # unpaired noise: a wide interval
    assert spread.low < 1.05 < spread.high
    with pytest.raises(BadInputError):
        median_ratio([1.0, 2.0], [1.0])


def test_peak_memory_sees_an_allocation_after_reset():
    """A fresh anonymous mapping (not malloc, which may reuse resident heap) raises the peak."""
    size = 64 * 2**20
    memory = PeakMemory()
    memory.reset()
    with mmap.mmap(-1, size) as block:
        block.write(b"\x01" * size)  # touch every page
        rss_with_block = rss_mb()
        peak = memory.peak_mb()
    assert memory.source
    if memory.resettable:
        assert rss_with_block >= memory.baseline_mb + 60
        assert peak >= rss_with_block


def test_parsers():
    assert parse_maps("all") is None and parse_maps("a, b,a") == ("a", "b")
    with pytest.raises(BadInputError):
        BenchConfig(iterations=2, duration_s=1.0)
    with pytest.raises(BadInputError, match="unknown clock"):
        BenchConfig(clock="sundial")
    assert BenchConfig().duration_s == 10.0


# ----------------------------------------------------------------------------- CLI
def test_cli_compare_plain_text(model_file, capsys):
    code = main([str(model_file), "--backend", "ort-cpu", "--shape", "24x40", "--warmup", "1",
                 "--iterations", "2", "--threads", "1", "--compare-plain"])
    out = capsys.readouterr().out
    assert code == 0
    assert "grafted/plain:" in out and "peak RSS:" in out
    assert out.count("\ngrafted ") == 1 and out.count("\nplain ") == 1


def test_cli_json_keys(model_file, capsys):
    code = main([str(model_file), "--backend", "ort-cpu", "--shape", "24x40", "--batch", "2",
                 "--warmup", "0", "--iterations", "2", "--compare-plain", "--maps", "pgn_uni_p0.5", "--clock", "cpu",
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(report) >= {"model", "backend", "config", "outputs", "latency_ms", "throughput_ips",
                           "ratio", "memory", "machine"}
    assert report["backend"] == "ort-cpu"
    assert report["outputs"] == {"grafted": ["logits", "pgn_uni_p0.5"], "plain": ["logits"]}
    assert set(report["latency_ms"]["plain"]) == {"n", "min_ms", "median_ms", "mean_ms", "p90_ms",
                                                  "p99_ms", "max_ms", "std_ms"}
    assert report["latency_ms"]["grafted"]["n"] == 2
    assert set(report["ratio"]) == {"value", "low", "high", "confidence", "overhead_percent"}
    assert report["config"]["shape"] == [24, 40] and report["config"]["batch"] == 2
    assert report["config"]["clock"] == "cpu"
    assert {"peak_rss_mb", "source"} <= set(report["memory"])
    assert {"cpu", "date_utc", "packages"} <= set(report["machine"])


def test_cli_without_compare_has_no_ratio(model_file, capsys):
    code = main([str(model_file), "--backend", "ort-cpu", "--shape", "24x40", "--warmup", "0",
                 "--iterations", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ratio"] is None and list(report["latency_ms"]) == ["grafted"]
    assert len(report["outputs"]["grafted"]) == 1 + 4 + 1 + 2  # logits, 4 maps, pred, 2 baselines


@pytest.mark.parametrize("argv, message", [
    (["--shape", "24"], "must have 2 sizes"),
    (["--maps", "pgn_uni_p9"], "no added output pgn_uni_p9"),
    (["--batch", "0"], "batch must be"),
])
def test_cli_bad_input_is_one_line(model_file, capsys, argv, message):
    code = main([str(model_file), "--backend", "ort-cpu", "--iterations", "1", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_missing_and_plain_models(tmp_path, capsys):
    assert main([str(tmp_path / "nope.onnx"), "--iterations", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
    plain = save_onnx(tiny_plain_model(), tmp_path / "plain.onnx")
    assert main([str(plain), "--iterations", "1"]) == 2
    assert "no pgn_deploy metadata" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the study's arithmetic
def test_study_scaling_slope_is_the_log_log_fit():
    from benchmarks.overhead import scaling

    records = [{"model": "m", "pixels": n,
                "latency_ms": {"plain": {"median_ms": 2.0 * n}, "ten": {"median_ms": 3.0 * n ** 0.5}}}
               for n in (1000, 4000, 16000)]
    fits = {f["variant"]: f["slope"] for f in scaling(records)}
    assert fits == {"plain": pytest.approx(1.0), "ten": pytest.approx(0.5)}


def test_study_targets_read_the_headline_ratios():
    from benchmarks.targets import evaluate

    ratio = {"value": 1.008, "low": 1.002, "high": 1.03, "confidence": 0.95, "overhead_percent": 0.8}
    doc = {"overhead": {"records": [{"model": "deeplabv3_mobilenet_v3_large", "size": [512, 1024],
                                     "ratio_to_plain": {"one": ratio}}]}}
    [target] = evaluate(doc)
    assert target["met"] and not target["certain"] and target["threshold"] == 1.01


def test_study_reports_the_a_a_control_beside_the_targets():
    from benchmarks.report import _targets
    from benchmarks.targets import control_ratio

    control = {"value": 1.031, "low": 0.99, "high": 1.07, "confidence": 0.95}
    doc = {"overhead": {"records": [{"model": "deeplabv3_mobilenet_v3_large", "size": [512, 1024],
                                     "ratio_to_plain": {"plain_again": control}}]}, "targets": []}
    assert control_ratio(doc) == control
    assert any("A/A control" in line and "1.031 [0.990, 1.070]" in line for line in _targets(doc))
    doc["overhead"]["records"][0]["ratio_to_plain"] = {}
    assert control_ratio(doc) is None and not any("A/A" in line for line in _targets(doc))


def test_backprop_targets_charge_both_methods_per_image_megapixel_and_use_the_largest_crop():
    from benchmarks.targets import backprop_speedups, evaluate

    def naive(per_mp):
        return {"naive_s_per_image_megapixel": per_mp}

    doc = {"plan": {"focus": [500, 1000]},  # 0.5 image megapixels
           "profile": [{"model": "m/one.pgn.onnx", "shape": [500, 1000], "pgn_kernel_ms": 0.8,
                        "inserted_kernel_ms": 0.2},
                       {"model": "m/one_output.pgn.onnx", "shape": [500, 1000], "pgn_kernel_ms": 100.0,
                        "inserted_kernel_ms": 0.0}],
           "backprop": [{"model": "m", "crop": [100, 200], "feature": naive(1.0), "output": naive(1000.0)},
                        {"model": "m", "crop": [500, 1000], "feature": naive(30.0), "output": naive(4000.0)}]}
    rows = {(r["crop"][0], r["resolution"]): r for r in backprop_speedups(doc)}
    assert rows[100, "feature"]["graft_s_per_image_megapixel"] == pytest.approx(0.002)  # 1 ms per 0.5 MP
    assert rows[100, "feature"]["speedup"] == pytest.approx(500.0)
    assert rows[500, "output"]["speedup"] == pytest.approx(4000.0 / 0.2)
    targets = {t["target"].split(" (")[1].split(",")[0]: t for t in evaluate(doc)}
    assert targets.keys() == {"feature resolution", "output resolution"}
    assert targets["feature resolution"]["value"] == pytest.approx(15000.0) and targets["feature resolution"]["met"]
    assert targets["output resolution"]["value"] == pytest.approx(20000.0)


def test_headline_repeats_pool_their_rounds_and_are_reported_one_by_one():
    from benchmarks.common import pool, summarize
    from benchmarks.report import _targets

    first = {"samples": {"plain": [1.0, 1.0], "one": [1.02, 1.02]}, "rounds": 2, "load_before": [1], "load_after": [2]}
    second = {"samples": {"plain": [1.0, 1.0, 1.0], "one": [0.99, 0.99, 0.99]}, "rounds": 3,
              "load_before": [3], "load_after": [4]}
    pooled = pool([first, second])
    assert pooled["rounds"] == 5 and pooled["samples"]["one"] == [1.02, 1.02, 0.99, 0.99, 0.99]
    assert (pooled["load_before"], pooled["load_after"]) == ([1], [4])
    repeats = [summarize(run)["ratio_to_plain"] for run in (first, second)]
    doc = {"overhead": {"records": [{"model": "deeplabv3_mobilenet_v3_large", "size": [512, 1024],
                                     "ratio_to_plain": summarize(pooled)["ratio_to_plain"], "repeats": repeats}]},
           "targets": []}
    assert any("2 independent comparisons" in line and "1 map 1.020 / 0.990" in line for line in _targets(doc))


def test_each_headline_comparison_creates_its_sessions_in_another_order():
    from benchmarks.overhead import _rotated

    names = ["plain", "one", "ten", "one_keep", "ten_keep", "plain_again"]
    orders = [_rotated(names, repeat, 3) for repeat in range(3)]
    assert all(sorted(order) == sorted(names) for order in orders)
    assert [order[0] for order in orders] == ["plain", "ten", "ten_keep"]
    assert _rotated(names, 0, 1) == names


def test_profile_counts_inserted_nodes_by_op_type_not_by_name():
    """ONNX Runtime renumbers its layout nodes per graph: renamed twins cancel, one extra
    ReorderOutput and a fused PGN node count."""
    from benchmarks.profile_ops import inserted_by_op

    plain = {"conv": 5.0, "ReorderOutput_token_7": 0.3, "ReorderOutput_token_8": 0.2}
    plain_ops = {"conv": "Conv", "ReorderOutput_token_7": "ReorderOutput", "ReorderOutput_token_8": "ReorderOutput"}
    grafted = {"conv": 5.1, "ReorderOutput_token_9": 0.31, "ReorderOutput_token_10": 0.2,
               "ReorderOutput_token_11": 0.25, "pgn/MatMul_3/MatMulScaleFusion/": 0.07}
    ops = {"conv": "Conv", "pgn/MatMul_3/MatMulScaleFusion/": "FusedMatMul"} | {
        name: "ReorderOutput" for name in grafted if name.startswith("Reorder")}
    inserted = inserted_by_op(grafted, ops, plain, plain_ops)
    assert inserted.keys() == {"ReorderOutput", "FusedMatMul"}
    assert inserted["ReorderOutput"] == (1, pytest.approx(0.26))
    assert inserted["FusedMatMul"] == (1, pytest.approx(0.07))


def test_mc_dropout_split_computes_the_network():
    from benchmarks.methods import check_split

    assert check_split("demo") == 0.0
