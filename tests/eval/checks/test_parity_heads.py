"""pgn-check on heads beyond a plain 1x1 conv: it compares what it lists, passes honest grafts
of k x k and constant-offset heads, names the reason it cannot compare (an affine before the
resize, a folded BatchNorm with --weights graph) and never says PASS when it compared nothing."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgn_deploy.cli.check import main
from pgn_deploy.contract import make_spec
from pgn_deploy.eval.checks.parity import check_parity
from pgn_deploy.export.api import export_model
from tests.export.test_export_heads import BatchNormHead

NUM_CLASSES = 4


class OffsetHead(nn.Module):
    """A 1x1 classifier plus a per-class constant, logits at the classifier's resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 1)
        self.register_buffer("offset", torch.linspace(-2.0, 2.0, NUM_CLASSES).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.stem(x))) + self.offset


class DilatedNoResize(nn.Module):
    """A 3x3 dilated classifier with bias, logits at the classifier's resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.stem(x)))


def _export(module: nn.Module, folder, name: str, weights: str = "trained", **spec):
    torch.manual_seed(0)
    path = folder / f"{name}.pth"
    torch.save(module.eval(), path)
    export_model(path, folder / f"{name}.pgn.onnx", make_spec(**spec), trust_pickle=True, input_shape="1x3x32x32",
                 weights=weights)
    return path, folder / f"{name}.pgn.onnx"


def _statuses(report, check: str) -> set[str]:
    return {r.status for r in report.results if r.check == check}


def test_a_per_class_constant_passes_against_the_reference_with_every_pixel_compared(tmp_path):
    torch.manual_seed(0)
    checkpoint, grafted = _export(OffsetHead(), tmp_path, "offset", form="exact", labels="both", p=[0.5, 2])
    report = check_parity(grafted, checkpoint, trust_pickle=True, samples=1)
    assert report.verdict == "pass", [r for r in report.results if r.status != "pass"]
    for result in report.results:
        if result.check in ("reference", "autograd"):
            assert result.status == "pass" and result.compared > 0, result
            assert "near-tie" not in result.note or int(result.note.split()[0]) < 10, result


def test_a_3x3_dilated_head_passes_self_reference_and_autograd(tmp_path):
    torch.manual_seed(0)
    checkpoint, grafted = _export(DilatedNoResize(), tmp_path, "dilated", form="exact", labels="both", p=[0.5, 2],
                                  bias=True)
    report = check_parity(grafted, checkpoint, trust_pickle=True, samples=1)
    assert report.verdict == "pass", [r for r in report.results if r.status != "pass"]
    assert _statuses(report, "autograd") == {"pass"} and _statuses(report, "self") == {"pass"}


def test_a_folded_batchnorm_is_named_and_nothing_compared_is_not_a_pass(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint, grafted = _export(BatchNormHead(), tmp_path, "bn", weights="graph")
    report = check_parity(grafted, checkpoint, trust_pickle=True, samples=1)
    skipped = [r for r in report.results if r.check == "reference" and r.status == "skip"]
    assert skipped and "folded" in skipped[0].note, report.results
    assert _statuses(report, "self") == {"pass"}
    # trained weights (the default): the fold is undone, the BatchNorm sits before the resize
    checkpoint, grafted = _export(BatchNormHead(), tmp_path, "bn_trained")
    report = check_parity(grafted, checkpoint, trust_pickle=True, samples=1)
    skipped = [r for r in report.results if r.check == "reference" and r.status == "skip"]
    assert skipped and "per-class affine" in skipped[0].note
    assert report.verdict == "pass"  # the self check compared every map


def test_the_verdict_is_skip_when_no_map_was_compared(tmp_path, capsys):
    from tests.graft.test_classifier_families import TokenHead

    torch.manual_seed(0)
    model = TokenHead(class_token=True).eval()
    path = tmp_path / "vit.pth"
    torch.save(model, path)
    export_model(path, tmp_path / "vit.pgn.onnx", trust_pickle=True, input_shape="1x3x64x64")
    report = check_parity(tmp_path / "vit.pgn.onnx", samples=1, input_shape="1x3x64x64")
    assert report.verdict == "skip" and report.passed
    assert main([str(tmp_path / "vit.pgn.onnx"), "--input-shape", "1x3x64x64", "--samples", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("SKIP (no map was compared with a reference)")
