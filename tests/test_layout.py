"""The dependency rule, read from the source (every ``import``, also inside functions, and every
``"pgn_deploy.x:attr"`` string a registry loads by name), not from what one run happens to import.

* A deployment host has no PyTorch: ``graft/``, ``runtime/``, ``engines/``, ``mining/``,
  ``contract.py`` and ``_version.py`` never import torch (or the modules built on it:
  ``export/``, ``reference``, ``models/``), ``eval/`` or ``cli/``.
* ``runtime/`` never imports ``engines/`` (a host that runs a plan needs no builder).
* Nothing outside ``cli/`` (and ``python -m pgn_deploy``'s ``__main__``) imports ``cli/``.
* ``eval/`` keeps no module at its top level besides its facade.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pgn_deploy"
TORCH_FREE = ("graft", "runtime", "engines", "mining", "contract", "_version")
TORCH_SIDE = ("torch", "torchvision", "pgn_deploy.export", "pgn_deploy.reference", "pgn_deploy.models",
              "pgn_deploy.eval", "pgn_deploy.cli")
REGISTRY_STRING = re.compile(r"^(pgn_deploy(?:\.\w+)+):\w+$")


def imported_modules(source: str) -> set[str]:
    """Every module a source names in an import statement or a ``"module:attr"`` registry string."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REGISTRY_STRING.match(node.value)
            if match:
                names.add(match.group(1))
    return names


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(module: str, imports: set[str]) -> list[str]:
    """The rules a module (dotted name) breaks with these imports, one line per import."""
    found = []
    part = module.split(".")[1] if "." in module else ""
    if part in TORCH_FREE:
        found += [f"{module} imports {m} (torch-free part)" for m in imports if _is_under(m, TORCH_SIDE)]
    if part == "runtime":
        found += [f"{module} imports {m} (runtime never imports engines)" for m in imports
                  if _is_under(m, ("pgn_deploy.engines",))]
    if part not in ("cli", "__main__"):  # python -m pgn_deploy is a command line too
        found += [f"{module} imports {m} (only cli imports cli)" for m in imports if _is_under(m, ("pgn_deploy.cli",))]
    return sorted(set(found))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_dependency_rule(module: str, path: Path) -> None:
    assert violations(module, imported_modules(path.read_text())) == []


def test_the_rule_catches_what_it_forbids() -> None:
    source = (
        "import torch\n"
        "def f():\n    from pgn_deploy.engines.tensorrt_build import build_plan\n"
        "from pgn_deploy.cli import common\n"
        "REGISTRY = {'x': 'pgn_deploy.export.api:export_model'}\n"
    )
    found = violations("pgn_deploy.runtime.runner", imported_modules(source))
    assert any("imports torch" in line for line in found)
    assert any("runtime never imports engines" in line for line in found)
    assert any("only cli imports cli" in line for line in found)
    assert any("pgn_deploy.export" in line for line in found)
    assert violations("pgn_deploy.cli.run", imported_modules("from pgn_deploy.cli import common")) == []


def test_eval_has_only_a_facade_at_its_top_level() -> None:
    top = sorted(p.name for p in (PACKAGE / "eval").glob("*.py"))
    assert top == ["__init__.py"]


def test_every_package_face_lists_what_it_exports() -> None:
    import pgn_deploy

    for name in pgn_deploy.__all__:
        assert getattr(pgn_deploy, name) is not None
    assert {"Runtime", "Result", "export_model", "graft", "PGNSpec", "Metadata", "PGNError"} <= set(dir(pgn_deploy))
