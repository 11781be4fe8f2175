"""pgn-eval --paper-maps: the twenty maps of the published code in Table 1 and in Figure 3's
MetaSeg comparison (both layers, MetaSeg alone and combined). The OoD tables list the maps of
the model like any other (``tests/eval/paper/test_pipeline.py``)."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from pgn_deploy.cli.eval import main as eval_main
from pgn_deploy.contract import read_metadata
from pgn_deploy.eval.paper.paper_maps import PAPER_LABELS, PAPER_P
from pgn_deploy.synthroad.layouts import LAYOUT_DIRS, write_synthroad
from tests.support.eval_models import grafted_model

TWENTY = sorted(f"pgn_{label}_p{p:g}{suffix}" for suffix in ("", "_penultimate") for label in PAPER_LABELS
                for p in PAPER_P)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_maps")
    data = root / "synthroad"
    write_synthroad(data, frames=3, seed=2, size=(64, 128), progress=False, layouts=["cityscapes"])
    checkpoint, model = grafted_model(root)
    return {"root": root, "data": data, "checkpoint": checkpoint, "model": model}


def test_paper_maps_cityscapes_figure3_has_both_layers(setup, capsys):
    out = setup["root"] / "out_cs"
    code = eval_main([str(setup["model"]), "--dataset", f"cityscapes:{setup['data'] / LAYOUT_DIRS['cityscapes']}",
                      "--paper-maps", "--checkpoint", str(setup["checkpoint"]), "--out", str(out),
                      "--folds", "2", "--quiet", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    regrafted = read_metadata(out / "models" / "paper_maps.pgn.onnx")
    assert sorted(regrafted.pgn_outputs) == TWENTY and regrafted.baselines == ["msp", "entropy"]
    assert regrafted.penultimate["activation"] == "Relu"
    text = json.dumps(report)
    for feature_set in ("metaseg", "pgn_last", "pgn_penultimate", "pgn", "metaseg+pgn"):
        assert f'"{feature_set}"' in text, feature_set
    assert all(f'"{name}"' in text for name in TWENTY)  # Table 1 has a row per map
    # the re-grafted model's original output is the model's own
    session = ort.InferenceSession(str(out / "models" / "paper_maps.pgn.onnx"), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(setup["model"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    name = regrafted.original_outputs[0]
    assert np.array_equal(session.run([name], {"input": x})[0], plain.run([name], {"input": x})[0])
