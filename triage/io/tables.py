"""Reading and writing tables (CSV, XLSX, JSONL, Parquet) without losing a row.

Every row keeps the line number a clerk would see in the file (CSV/JSONL: the physical line of the
record; XLSX: the sheet row; Parquet: the 1-based row), so that an error report can point at it.
Broken rows (wrong field count, invalid JSON, undecodable bytes) are reported, never dropped
silently, and never stop the good rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from triage.errors import InputFileError
from triage.io.streams import SUPPORTED, RowError, detect_encoding, file_kind, open_source

__all__ = ["SUPPORTED", "RowError", "Table", "detect_encoding", "file_kind", "read_table", "write_table",
           "resolve_text_columns", "require_column"]

log = logging.getLogger(__name__)

#: Column names auto-detected when the user names none (lower-cased comparison).
TITLE_COLUMNS = ("title", "标题", "留言主题", "主题", "subject")
BODY_COLUMNS = ("text", "内容", "留言详情", "留言内容", "诉求内容", "建议内容", "意见内容", "正文",
                "body", "content", "message", "description", "详情")


@dataclass
class Table:
    frame: pd.DataFrame                      # all input columns, as strings (object dtype)
    lines: list[int]                         # the file line/row of each frame row
    errors: list[RowError] = field(default_factory=list)  # rows that could not even be read
    encoding: str = ""
    total_rows: int = 0                      # frame rows + unreadable rows


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a whole table (the streaming readers of :mod:`triage.io.streams`, in one chunk).

    For files too large for memory, :mod:`triage.batch.runner` reads the same streams chunk by chunk.
    """
    src = open_source(path)
    frames: list[pd.DataFrame] = []
    lines: list[int] = []
    errors: list[RowError] = []
    for ch in src.chunks(1 << 62):
        frames.append(ch.frame)
        lines += ch.lines
        errors += ch.errors
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return Table(frame.astype(object), lines, errors, src.encoding, len(frame) + len(errors))


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write by extension; CSV is UTF-8 with BOM so Excel on Windows opens Chinese correctly."""
    p = Path(path)
    kind = file_kind(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    if kind == "csv":
        frame.to_csv(tmp, index=False, encoding="utf-8-sig", sep="\t" if p.suffix.lower() == ".tsv" else ",")
    elif kind == "jsonl":
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    elif kind == "xlsx":
        frame.to_excel(tmp, index=False, engine="openpyxl")
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, p)  # the output appears only when complete


def resolve_text_columns(frame: pd.DataFrame, requested: Sequence[str] | None) -> list[str]:
    """The columns to join as the message text: the user's, or detected from common names."""
    cols = [str(c) for c in frame.columns]
    if requested:
        missing = [c for c in requested if c not in cols]
        if missing:
            raise InputFileError(
                f"找不到文本列 {', '.join(missing)}；文件中的列为：{', '.join(cols)} / text column not found")
        return list(requested)
    lower = {c.lower(): c for c in cols}
    title = next((lower[c] for c in TITLE_COLUMNS if c in lower), None)
    body = next((lower[c] for c in BODY_COLUMNS if c in lower), None)
    if body is None and title is None:
        raise InputFileError(
            f"无法识别文本列（请用 --text-col 指定）；文件中的列为：{', '.join(cols)} / no text column")
    return [c for c in (title, body) if c is not None]


def require_column(frame: pd.DataFrame, name: str, what: str) -> None:
    if name not in frame.columns:
        raise InputFileError(
            f"找不到{what}列 {name!r}；文件中的列为：{', '.join(map(str, frame.columns))} / column not found")
