from pathlib import Path
import shutil

import pytest

from triage.config import load_taxonomy
from triage.errors import ConfigError

CORPORA = Path(__file__).resolve().parent.parent / "corpora"
ROOT = CORPORA.parent


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


@pytest.mark.parametrize("old, new, key", [
    ("  committee: tian ", "  committee: tiann ", "fallback.committee"),
    ("  department: 信访 ", "  department: 信访办 ", "fallback.department"),
    ("assigned_channels: [党政交题]", "assigned_channels: [党委交题]", "assigned_channels"),
    ("fallback:\n  committee: tian ", "fallback: tian\nx:\n  committee: tian ", "fallback"),
])
def test_fallback_routes_and_assigned_channels_are_configuration_checked_at_load(tmp_path, old, new, key):
    """They were string constants in route.py and principles.py: an office naming its 提案委员会 or its
    信访 office differently got an empty route, and its own assignment channel never met 政治性."""
    d = _copy(tmp_path)
    t = (d / "taxonomy.yaml").read_text(encoding="utf-8")
    assert old in t
    (d / "taxonomy.yaml").write_text(t.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_taxonomy(d)
    assert "taxonomy.yaml" in str(e.value) and key in str(e.value)


def test_a_taxonomy_from_before_the_keys_loads_with_the_former_defaults(tmp_path):
    d = _copy(tmp_path)
    t = (d / "taxonomy.yaml").read_text(encoding="utf-8")
    t = t[:t.index("# Where a message goes when no domain answers")]
    (d / "taxonomy.yaml").write_text(t, encoding="utf-8")
    tax = load_taxonomy(d)
    assert (tax.fallback_committee, tax.fallback_department, tax.assigned_channels) == ("tian", "信访", ("党政交题",))
    (d / "committees.yaml").write_text((d / "committees.yaml").read_text(encoding="utf-8").replace("id: tian", "id: ti"),
                                       encoding="utf-8")
    with pytest.raises(ConfigError, match="fallback.committee"):   # and the former default is not there
        load_taxonomy(d)


def test_an_office_with_its_own_names_routes_and_judges_by_them(tmp_path):
    from triage.judge.principles import PrincipleJudge
    from triage.judge.route import Router
    from triage.topics.builder import Topic

    d = _copy(tmp_path)
    t = (d / "taxonomy.yaml").read_text(encoding="utf-8")
    t = t.replace("  department: 信访 ", "  department: 乡镇街道 ").replace("committee: tian ", "committee: shehui ")
    t = t.replace("channels: [意见箱, 二维码, 网上表单, 委员荐题, 党政交题, 社情民意]",
                  "channels: [意见箱, 二维码, 网上表单, 委员荐题, 党委政府交办, 社情民意]")
    (d / "taxonomy.yaml").write_text(t.replace("assigned_channels: [党政交题]", "assigned_channels: [党委政府交办]"),
                                     encoding="utf-8")
    tax = load_taxonomy(d)
    r = Router(tax)
    assert r.route("不存在的领域", "individual").name == "乡镇人民政府/街道办事处"
    assert r.route("不存在的领域", "group").name == "社会和法制委员会"
    topic = Topic(id="T1", members=["a", "b"], size=2, voices=2, submitters=1, group_share=1.0,
                  channels=["党委政府交办"], domain="社区治理")
    card = PrincipleJudge(taxonomy=tax).judge(topic, ["小区停车难", "小区停车难问题"], ["小区 停车", "小区 停车"])
    pol = next(p for p in card.principles if p.name == "政治性")
    assert any("党委政府交办" in e for e in pol.evidence)


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
    assert "$(PIP_INSTALL) -e ." in recipe and "torch" not in recipe and "[dev" not in recipe
    # …and both installs take their versions from the lock file the model and tests were made with
    assert re.search(r"^PIP_INSTALL := .*pip install --quiet -c constraints.txt$", make, re.M)
    assert all("$(PIP_INSTALL)" in line for line in make.splitlines() if "pip install" in line and "-e" in line)
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {canonicalize_name(k): v for k, v in (
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#"))}
    for d in deps:   # the lock file satisfies pyproject's ranges
        req = Requirement(d)
        if req.marker is None or req.marker.evaluate():
            have = pins.get(canonicalize_name(req.name))
            assert have and req.specifier.contains(have, prereleases=True), (req.name, have, str(req.specifier))


def test_every_package_the_code_imports_is_declared():
    """pydantic, starlette and markupsafe were imported directly but came only through fastapi/jinja2."""
    import ast
    import importlib.metadata as md
    import re
    import sys
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in pyproject["dependencies"]}
    dists = md.packages_distributions()
    missing = set()
    for f in [*(ROOT / "triage").rglob("*.py"), *(ROOT / "service").rglob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top in sys.stdlib_module_names or top in ("triage", "service"):
                    continue
                names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not names & declared:
                    missing.add(f"{top} ({f.relative_to(ROOT)})")
    # optional backends are imported inside functions behind a clear error; they live in extras
    optional = {d for extra in pyproject.get("optional-dependencies", {}).values() for d in extra}
    optional = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in optional}
    missing = {m for m in missing if not ({d.lower().replace("_", "-") for d in dists.get(m.split()[0], [m.split()[0]])}
                                          & optional)}
    assert not missing, f"imported but not declared in [project] dependencies: {sorted(missing)}"
