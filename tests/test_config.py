from pathlib import Path
import shutil

import pytest

from triage.config import load_taxonomy
from triage.errors import ConfigError

CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def test_shipped_taxonomy_is_complete():
    tax = load_taxonomy(CORPORA)
    assert len(tax.domains) >= 12
    names = {c.name for c in tax.committees}
    for c in ["提案委员会", "经济委员会", "农业和农村委员会", "人口资源环境委员会", "教科卫体委员会",
              "社会和法制委员会", "民族和宗教委员会", "港澳台侨和外事委员会", "文化文史和学习委员会"]:
        assert c in names
    assert len(tax.departments) >= 15
    assert tax.committee_for("教育").name == "教科卫体委员会"


def _copy(tmp_path: Path) -> Path:
    for f in ("taxonomy.yaml", "committees.yaml", "departments.yaml"):
        shutil.copy(CORPORA / f, tmp_path / f)
    return tmp_path


def test_unknown_committee_names_file_key_and_value(tmp_path):
    d = _copy(tmp_path)
    t = (d / "taxonomy.yaml").read_text(encoding="utf-8").replace("committee: jiaoke", "committee: jiaokee", 1)
    (d / "taxonomy.yaml").write_text(t, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_taxonomy(d)
    msg = str(e.value)
    assert "taxonomy.yaml" in msg and "committee" in msg and "jiaokee" in msg


def test_broken_yaml_names_the_line(tmp_path):
    d = _copy(tmp_path)
    (d / "committees.yaml").write_text("committees:\n  - id: a\n   name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_taxonomy(d)
    assert "committees.yaml" in str(e.value) and "行" in str(e.value)


def test_missing_field_is_named(tmp_path):
    d = _copy(tmp_path)
    (d / "departments.yaml").write_text("departments:\n  - {id: 住建, name: 住房和城乡建设局}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_taxonomy(d)
    assert "departments[0].remit" in str(e.value)


def test_make_run_installs_only_what_the_service_needs():
    """A user's `make run` must not pull torch (a multi-GB CUDA build off this machine's wheel cache),
    the browser, the fuzzer or Dask: those are the test and extra installs."""
    import re
    import tomllib

    from tests.conftest import ROOT

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in deps}
    assert not names & {"torch", "sentence-transformers", "playwright", "schemathesis", "dask", "distributed"}
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    run_target = re.search(r"^run: (\S+)", make, re.M).group(1)
    recipe = re.search(rf"^{re.escape(run_target)}: .*?\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "pip install --quiet -e ." in recipe and "torch" not in recipe and "[dev" not in recipe
