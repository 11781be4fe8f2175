"""One set of CLI conventions over every pgn-* command (issue: one folder per stage)."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from pgn_deploy import __version__
from pgn_deploy.__main__ import main as dispatch
from pgn_deploy.cli.common import COMMANDS
from pgn_deploy.contract import BadInputError
from pgn_deploy.engines.tensorrt_build import parse_shape_specs, trtexec_shape_specs

REPO = Path(__file__).resolve().parents[2]


def _parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f"pgn_deploy.cli.{command}")
    captured: dict[str, argparse.ArgumentParser] = {}

    def grab(parser, command, argv=None):  # run_cli's signature: keep the parser, run nothing
        captured["parser"] = parser
        return 0

    original = module.run_cli
    module.run_cli = grab
    try:
        module.main(["--help"])
    finally:
        module.run_cli = original
    return captured["parser"]


def test_every_command_has_a_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"pgn-{c}" for c in COMMANDS} <= set(scripts)
    for name, target in scripts.items():
        if name.removeprefix("pgn-") in COMMANDS:
            assert target == f"pgn_deploy.cli.{name.removeprefix('pgn-')}:main"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_shared_flags_and_flag_meanings(command, capsys):
    parser = _parser(command)
    options = {opt: action for action in parser._actions for opt in action.option_strings}
    for flag in ("--version", "--debug", "--quiet", "-q", "--verbose"):
        assert flag in options, f"pgn-{command} lacks {flag}"
    if "-o" in options:  # -o/--output is always a file
        assert options["-o"].dest == "output" and "--output" in options["-o"].option_strings
    if "--out" in options:  # --out is always a folder, and never short for a file
        assert options["--out"].option_strings == ["--out"] and options["--out"].dest == "out"
    assert "--no-progress" not in options
    if command == "triton":
        assert "--triton-backend" in options and "--backend" not in options
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"pgn-{command} (pgn-deploy) {__version__}"


def test_python_dash_m_dispatches(capsys):
    assert dispatch(["--version"]) == 0 and capsys.readouterr().out.strip() == f"pgn-deploy {__version__}"
    assert dispatch([]) == 2 and "commands:" in capsys.readouterr().out
    assert dispatch(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "pgn_deploy", "lint", "--version"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"pgn-lint (pgn-deploy) {__version__}"


def test_trtexec_shapes_become_profiles():
    specs = trtexec_shape_specs("input:1x3x256x256", "input:1x3x512x512", "input:4x3x1024x1024")
    assert specs == ["input:1x3x256x256/1x3x512x512/4x3x1024x1024"]
    assert parse_shape_specs(specs)["input"].max == (4, 3, 1024, 1024)
    assert trtexec_shape_specs(None, None, None) == []
    with pytest.raises(BadInputError, match="--optShapes is missing"):
        trtexec_shape_specs("input:1x3x8x8", None, "input:1x3x8x8")
    with pytest.raises(BadInputError, match="same inputs"):
        trtexec_shape_specs("a:1x3x8x8", "b:1x3x8x8", "a:1x3x8x8")
