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
    # the module contract (the package contract orders whole subpackages)
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers" and "Packages" not in c["name"])["layers"]
    return {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}


def test_every_library_module_has_a_layer():
    # every module, inside the stage subpackages too (the migrations are Alembic's, run by the store)
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "triage").rglob("*.py")
               if p.stem != "__init__" and "migrations" not in p.parts}
    missing = sorted(modules - _layered_modules())
    assert not missing, f"add these modules to a layer in pyproject.toml [tool.importlinter]: {missing}"


def test_every_stage_package_is_in_the_package_layers_and_says_what_it_offers():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers" and "Packages" in c["name"])["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    packages = {f"triage.{p.parent.name}" for p in (ROOT / "triage").glob("*/__init__.py") if p.parent.name != "migrations"}
    assert packages - named == set(), f"stage packages missing from the package layers: {sorted(packages - named)}"
    for p in packages:
        doc = (ROOT / Path(*p.split(".")) / "__init__.py").read_text(encoding="utf-8")
        assert doc.startswith('"""') and len(doc) > 200, f"{p}/__init__.py should say what the package offers"


def test_the_layers_name_only_modules_that_exist():
    gone = sorted(m for m in _layered_modules() if m.startswith("triage.")
                  and not (ROOT / Path(*m.split("."))).with_suffix(".py").exists()
                  and not (ROOT / Path(*m.split(".")) / "__init__.py").exists())
    assert not gone, f"layers name modules that no longer exist: {gone}"
