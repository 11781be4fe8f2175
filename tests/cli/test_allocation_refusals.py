"""Sizes that cannot be allocated are refused in one line before numpy tries (issue 19 item 14)."""
from __future__ import annotations

import pytest

from pgn_deploy.cli.bench import main as bench_main
from pgn_deploy.cli.check import main as check_main
from pgn_deploy.runtime.limits import check_allocation, physical_memory_bytes
from tests.support.runtime_models import build_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("alloc") / "tiny.pgn.onnx")


@pytest.mark.parametrize("argv", [
    ["bench", "--shape", "99999x99999", "--iterations", "1"],
    ["check", "--input-shape", "1x3x99999x99999"],
    ["check", "--against", "MODEL", "--input-shape", "1x3x99999x99999"],
])
def test_huge_shapes_are_refused_in_one_line(model, capsys, argv):
    command, *args = argv
    args = [str(model) if a == "MODEL" else a for a in args]
    code = (bench_main if command == "bench" else check_main)([str(model), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "99999x99999 needs" in err and "GiB" in err and "Traceback" not in err


def test_the_limit_is_half_the_memory():
    half = physical_memory_bytes() // 2
    check_allocation((half // 8,), 8, "x")
    with pytest.raises(Exception, match="more than half"):
        check_allocation((half // 8 + 1,), 8, "x")
