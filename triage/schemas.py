"""Dataclasses shared by the stages (the API's pydantic models live in service/schemas.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Route:
    """Where a message goes: a committee (group issues) or a department (individual petitions)."""

    kind: str                 # "committee" | "department" | "none"
    id: str | None
    name: str | None
    reason: str


@dataclass
class Assessment:
    """What the classifiers say about one message, with the evidence behind each verdict."""

    text: str                                     # normalised and PII-masked
    domain: str | None
    domain_confidence: float
    domain_evidence: list[tuple[str, float]]
    scope: str | None                             # "group" | "individual"
    scope_confidence: float
    scope_cues: dict[str, list[str]]
    scope_evidence: list[tuple[str, float]]
    route: Route
    pii_kinds: list[str] = field(default_factory=list)
    model_version: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
