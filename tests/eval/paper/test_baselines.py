"""Baselines and per-frame inference: MC dropout and ensembles against the plain model, the
variance merge of chunked MC samples, test-time augmentation, the map cache, float16 scaling."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pgn_deploy.contract import BadInputError
from pgn_deploy.eval.paper import baselines as B
from pgn_deploy.eval.paper.datasets import Frame
from pgn_deploy.eval.paper.inference import TTA, MapCache, frame_maps
from pgn_deploy.eval.paper.smiyc_export import FLOAT16_MAX, float16_exponent
from pgn_deploy.runtime import Runtime
from pgn_deploy.synthroad.generator import generate_frame
from tests.support.eval_models import grafted_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines")
    checkpoint, model = grafted_model(folder)
    runtime = Runtime(model)
    info = runtime.metadata.input
    image_path = folder / "frame.png"
    cv2.imwrite(str(image_path), generate_frame(2, 0, "anomaly", (64, 128)).image[..., ::-1])
    return {
        "folder": folder, "checkpoint": checkpoint, "runtime": runtime, "info": info,
        "frame": Frame("frame", image_path, image_path),
        "mc_off": B.export_mc_dropout(checkpoint, folder / "mc_off.onnx", info, rate=0.0),
        "mc": B.export_mc_dropout(checkpoint, folder / "mc.onnx", info),
        "member": B.export_member(checkpoint, folder / "member.onnx", info),
    }


def plain(models) -> tuple[np.ndarray, object]:
    image = models["frame"].load_image()
    return image, models["runtime"].run(image, color="BGR", logits=True)


def test_mc_dropout_with_one_sample_and_dropout_off_is_the_plain_model(models):
    image, result = plain(models)
    maps = B.MCDropoutScorer(models["mc_off"], models["info"], samples=1)(image)
    np.testing.assert_allclose(maps["mc_entropy"], result.scores["entropy"], atol=2e-5)
    assert np.array_equal(maps["mc_variance"], np.zeros_like(maps["mc_variance"]))


def test_mc_dropout_samples_differ_when_dropout_is_on(models):
    image, result = plain(models)
    scorer = B.MCDropoutScorer(models["mc"], models["info"], samples=4, batch=3)
    first, second = scorer(image), scorer(image)
    assert first["mc_variance"].min() >= 0 and first["mc_variance"].mean() > 1e-6
    assert not np.allclose(first["mc_entropy"], second["mc_entropy"])
    assert first["mc_entropy"].shape == result.scores["entropy"].shape


def test_chunked_mc_samples_merge_to_the_mean_and_variance_of_all(models):
    samples = np.random.default_rng(0).dirichlet(np.ones(4), size=(7, 3, 5)).transpose(0, 3, 1, 2)
    samples = samples.astype(np.float32)  # 7 samples x 4 classes x 3 x 5

    class Replay:
        taken = 0

        def probs(self, image, color, copies=1):
            chunk = samples[self.taken:self.taken + copies]
            self.taken += copies
            return chunk

    scorer = B.MCDropoutScorer(models["mc"], models["info"], samples=7, batch=3)
    scorer.model = Replay()
    maps = scorer(np.zeros((3, 5, 3), np.uint8))
    np.testing.assert_allclose(maps["mc_variance"], samples.var(axis=0).mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps["mc_entropy"], B.entropy(samples.mean(axis=0)), rtol=1e-5)


def test_a_one_member_ensemble_is_the_model(models):
    image, result = plain(models)
    maps = B.EnsembleScorer([models["member"]], models["info"])(image)
    np.testing.assert_allclose(maps["ens_msp"], result.scores["msp"], atol=2e-5)
    np.testing.assert_allclose(maps["ens_entropy"], result.scores["entropy"], atol=2e-5)


def test_baseline_costs_are_stated_per_sample_and_member():
    assert B.cost("mc_dropout", 8) == "8 forward passes of the network with dropout sampling"
    assert B.cost("ensemble", 1) == "1 forward pass, one per member network (1 network in memory)"
    with pytest.raises(BadInputError, match="at least one sample"):
        B.MCDropoutScorer("unused.onnx", None, samples=0)


@pytest.mark.parametrize("text,scales,flip", [(None, (1.0,), False), ("", (0.5, 1.0, 2.0), True),
                                              ("0.75,1,flip", (0.75, 1.0), True), ("2", (2.0,), False)])
def test_tta_parse(text, scales, flip):
    tta = TTA.parse(text)
    assert (tta.scales, tta.flip) == (scales, flip)
    assert tta.active == (text is not None)
    assert len(tta.views) == len(scales) * (2 if flip else 1)


@pytest.mark.parametrize("text", ["0.5,abc", "0,1", "-1", "nan"])
def test_tta_parse_refuses_bad_scales(text):
    with pytest.raises(BadInputError, match="--tta"):
        TTA.parse(text)


def test_tta_averages_views_flipped_back_and_resized(models, tmp_path):
    runtime, frame = models["runtime"], models["frame"]
    image = frame.load_image()
    names = ["pgn_uni_p0.5", "entropy"]
    got = frame_maps(runtime, frame, names, cache=MapCache(None), tta=TTA((0.5, 1.0), True), with_probs=True)
    views = []
    for scale in (0.5, 1.0):
        view = image if scale == 1.0 else cv2.resize(image, (64, 32), interpolation=cv2.INTER_LINEAR)
        for flip in (False, True):
            result = runtime.run(np.ascontiguousarray(view[:, ::-1] if flip else view), color="BGR", logits=True)
            score = cv2.resize(result.scores["pgn_uni_p0.5"], (128, 64), interpolation=cv2.INTER_LINEAR)
            views.append(score[:, ::-1] if flip else score)
    np.testing.assert_allclose(got.maps["pgn_uni_p0.5"], np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    assert got.probs.shape == (19, 64, 128)
    np.testing.assert_allclose(got.probs.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(got.pred, got.probs.argmax(axis=0))


def test_frame_maps_cache_each_group_and_refuse_other_producers(models, tmp_path):
    runtime, frame = models["runtime"], models["frame"]
    cache = MapCache(tmp_path / "cache")
    scorer = B.EnsembleScorer([models["member"]], models["info"])
    first = frame_maps(runtime, frame, ["msp"], cache=cache, scorers=[scorer])
    assert set(first.seconds) == {"model", "ensemble"}
    again = frame_maps(runtime, frame, ["msp"], cache=cache, scorers=[scorer])
    assert again.seconds == {} and np.array_equal(again.maps["ens_msp"], first.maps["ens_msp"])
    assert np.array_equal(again.pred, first.pred) and again.pred.dtype == np.int32
    (tmp_path / "cache" / "ens_msp" / "frame.npy").unlink()
    assert set(frame_maps(runtime, frame, ["msp"], cache=cache, scorers=[scorer]).seconds) == {"ensemble"}

    cache.claim({"msp": {"model": "a"}})
    cache.claim({"msp": {"model": "a"}})  # the same producer: fine
    with pytest.raises(BadInputError, match="another model"):
        cache.claim({"msp": {"model": "b"}})
    cache.claim({"msp": {"model": "b"}}, force=True)  # recomputed: the old maps are gone
    assert not (tmp_path / "cache" / "msp").exists() and (tmp_path / "cache" / "ens_msp").exists()


@pytest.mark.parametrize("max_abs,exponent", [(0.0, 0), (FLOAT16_MAX, 0), (65505.0, -1), (1.0, 15),
                                              (0.999, 16), (3e-30, 114), (1e9, -14)])
def test_float16_scaling_exponent(max_abs, exponent):
    assert float16_exponent(max_abs) == exponent
    if max_abs:
        assert FLOAT16_MAX / 2 < np.ldexp(max_abs, exponent) <= FLOAT16_MAX
        assert np.isfinite(np.float16(np.ldexp(np.float32(max_abs), exponent)))
