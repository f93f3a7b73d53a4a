"""Taxonomy, committees and departments, loaded from YAML and validated.

The taxonomy is configuration, not code: an office edits the YAML (or passes its own directory)
and retrains; nothing in the library names a domain. Validation fails early with the file, the key
and the problem, because a typo in a committee id would otherwise surface as a wrong route weeks later.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from triage.errors import ConfigError

log = logging.getLogger(__name__)

#: The repository's own corpora directory: the embedded default configuration.
DEFAULT_CORPORA = Path(__file__).resolve().parent.parent / "corpora"


def corpora_dir() -> Path:
    """Where configuration and corpora live (``TRIAGE_CORPORA`` overrides the shipped one)."""
    return Path(os.environ.get("TRIAGE_CORPORA", DEFAULT_CORPORA))


@dataclass(frozen=True)
class Committee:
    id: str
    name: str
    remit: str


@dataclass(frozen=True)
class Department:
    id: str
    name: str
    remit: str


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    committee: str
    department: str


@dataclass(frozen=True)
class Taxonomy:
    domains: tuple[Domain, ...]
    committees: tuple[Committee, ...]
    departments: tuple[Department, ...]
    scopes: dict[str, str] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    fallback_committee: str | None = None     # a committee id: group issues no domain routes
    fallback_department: str | None = None    # a department id: petitions no domain routes
    assigned_channels: tuple[str, ...] = ()   # channels of the party committee's and government's assignments

    def domain(self, name: str) -> Domain | None:
        return next((d for d in self.domains if d.name == name), None)

    def committee(self, cid: str) -> Committee | None:
        return next((c for c in self.committees if c.id == cid), None)

    def department(self, did: str) -> Department | None:
        return next((d for d in self.departments if d.id == did), None)

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    def committee_for(self, domain: str) -> Committee | None:
        d = self.domain(domain)
        return self.committee(d.committee) if d else None

    def department_for(self, domain: str) -> Department | None:
        d = self.domain(domain)
        return self.department(d.department) if d else None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(str(path), "(文件)", "文件不存在 / file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"第 {mark.line + 1} 行" if mark is not None else "(文件)"
        raise ConfigError(str(path), where, f"YAML 格式错误：{getattr(exc, 'problem', exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "(文件)", "不是 UTF-8 编码 / not UTF-8") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(顶层)", "应为键值映射 / top level must be a mapping")
    return data


def _records(path: Path, data: dict[str, Any], key: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise ConfigError(str(path), key, "缺少或为空，应为非空列表 / missing or empty list")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(str(path), where, "应为映射 / must be a mapping")
        rec: dict[str, str] = {}
        for f in fields:
            v = item.get(f)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(str(path), f"{where}.{f}", "缺少或不是非空字符串 / missing or not a non-empty string")
            rec[f] = v.strip()
        ident = rec[fields[0]]
        if ident in seen:
            raise ConfigError(str(path), f"{where}.{fields[0]}", f"重复的标识 {ident!r} / duplicate")
        seen.add(ident)
        out.append(rec)
    return out


def load_taxonomy(directory: str | os.PathLike[str] | None = None) -> Taxonomy:
    """Load and cross-validate taxonomy.yaml, committees.yaml and departments.yaml."""
    base = Path(directory) if directory is not None else corpora_dir()
    cpath, dpath, tpath = base / "committees.yaml", base / "departments.yaml", base / "taxonomy.yaml"
    committees = [Committee(**r) for r in _records(cpath, _read_yaml(cpath), "committees", ("id", "name", "remit"))]
    departments = [Department(**r) for r in _records(dpath, _read_yaml(dpath), "departments", ("id", "name", "remit"))]
    tdata = _read_yaml(tpath)
    domains = [
        Domain(**r)
        for r in _records(tpath, tdata, "domains", ("name", "description", "committee", "department"))
    ]
    cids = {c.id for c in committees}
    dids = {d.id for d in departments}
    for i, d in enumerate(domains):
        if d.committee not in cids:
            raise ConfigError(str(tpath), f"domains[{i}].committee",
                              f"{d.committee!r} 不在 committees.yaml 中（可选：{', '.join(sorted(cids))}）")
        if d.department not in dids:
            raise ConfigError(str(tpath), f"domains[{i}].department",
                              f"{d.department!r} 不在 departments.yaml 中")
    scopes = tdata.get("scopes") or {"group": "群众性问题", "individual": "个人诉求"}
    if not isinstance(scopes, dict) or set(scopes) != {"group", "individual"}:
        raise ConfigError(str(tpath), "scopes", "应恰好包含 group 与 individual 两个键")
    channels = tdata.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ConfigError(str(tpath), "channels", "应为字符串列表")
    fb = tdata.get("fallback")
    if fb is None:   # a taxonomy written before the key: the ids route.py used to hard-code, if this office has them
        fb = {"committee": "tian", "department": "信访"}
        log.warning("%s 没有 fallback：沿用 committee=tian、department=信访（若不存在则报错）/ no fallback: using the "
                    "former defaults", tpath)
    if not isinstance(fb, dict):
        raise ConfigError(str(tpath), "fallback", "应为映射（committee 与 department：无领域可依时的去向）/ "
                                                  "must map committee and department")
    for key, known, where in (("committee", cids, "committees.yaml"), ("department", dids, "departments.yaml")):
        if fb.get(key) not in known:
            raise ConfigError(str(tpath), f"fallback.{key}", f"{fb.get(key)!r} 不在 {where} 中")
    assigned = tdata.get("assigned_channels")
    if assigned is None:   # as before the key: 党政交题, where the office has that channel
        assigned = [c for c in ("党政交题",) if c in channels]
    if not isinstance(assigned, list) or any(c not in channels for c in assigned):
        raise ConfigError(str(tpath), "assigned_channels",
                          f"应为 channels 中的渠道名列表（channels：{'、'.join(channels)}）")
    return Taxonomy(tuple(domains), tuple(committees), tuple(departments), dict(scopes), tuple(channels),
                    fb["committee"], fb["department"], tuple(assigned))


@functools.lru_cache(maxsize=4)
def default_taxonomy() -> Taxonomy:
    """The shipped taxonomy, cached: it is read-only configuration."""
    return load_taxonomy()
