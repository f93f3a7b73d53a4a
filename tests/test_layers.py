"""The import contracts cover every module: a new module must be given its layer.

`lint-imports` (run by `make test`) checks the layers in pyproject.toml, but a module missing from
every layer is checked by nothing: it could import from anywhere and be imported from anywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layered_modules() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    return {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}


def test_every_library_module_has_a_layer():
    modules = {f"triage.{p.stem}" for p in (ROOT / "triage").glob("*.py") if p.stem != "__init__"}
    modules |= {f"triage.{p.name}" for p in (ROOT / "triage").iterdir()
                if p.is_dir() and (p / "__init__.py").exists() and p.name != "migrations"}
    missing = sorted(modules - _layered_modules())
    assert not missing, f"add these modules to a layer in pyproject.toml [tool.importlinter]: {missing}"


def test_the_layers_name_only_modules_that_exist():
    gone = sorted(m for m in _layered_modules() if m.startswith("triage.")
                  and not (ROOT / Path(*m.split("."))).with_suffix(".py").exists()
                  and not (ROOT / Path(*m.split(".")) / "__init__.py").exists())
    assert not gone, f"layers name modules that no longer exist: {gone}"
