"""Reading and writing tables (CSV, XLSX, JSONL, Parquet) without losing a row.

Every row keeps the line number a clerk would see in the file (CSV/JSONL: the physical line of the
record; XLSX: the sheet row; Parquet: the 1-based row), so that an error report can point at it.
Broken rows (wrong field count, invalid JSON, undecodable bytes) are reported, never dropped
silently, and never stop the good rows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from triage.errors import InputFileError

log = logging.getLogger(__name__)

SUPPORTED = {".csv": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}

#: Column names auto-detected when the user names none (lower-cased comparison).
TITLE_COLUMNS = ("title", "标题", "留言主题", "主题", "subject")
BODY_COLUMNS = ("text", "内容", "留言详情", "留言内容", "诉求内容", "建议内容", "意见内容", "正文",
                "body", "content", "message", "description", "详情")


@dataclass
class RowError:
    line: int
    reason: str
    column: str = ""


@dataclass
class Table:
    frame: pd.DataFrame                      # all input columns, as strings (object dtype)
    lines: list[int]                         # the file line/row of each frame row
    errors: list[RowError] = field(default_factory=list)  # rows that could not even be read
    encoding: str = ""
    total_rows: int = 0                      # frame rows + unreadable rows


def file_kind(path: str | os.PathLike[str]) -> str:
    ext = Path(path).suffix.lower()
    if ext not in SUPPORTED:
        raise InputFileError(
            f"不支持的文件类型 {ext or '(无扩展名)'}：{path}。支持 CSV、XLSX、JSONL、Parquet "
            f"(.csv .tsv .xlsx .jsonl .ndjson .parquet) / unsupported file type")
    return SUPPORTED[ext]


def detect_encoding(raw: bytes) -> str:
    """UTF-8 (with or without BOM) first, then GB18030 (a superset of GBK/GB2312), then a guess."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    sample = raw[: 1 << 20]
    for enc in ("utf-8", "gb18030"):
        try:
            sample.decode(enc)
            return enc
        except UnicodeDecodeError as exc:
            # a multi-byte character cut at the sample's end is not a decoding failure
            if len(sample) == (1 << 20) and exc.start >= len(sample) - 4:
                return enc
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return best.encoding if best is not None else "utf-8"


def _decode(raw: bytes) -> tuple[str, str]:
    enc = detect_encoding(raw)
    return raw.decode(enc, errors="surrogateescape"), enc


def _has_bad_bytes(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s)


def _read_csv(path: Path) -> Table:
    text, enc = _decode(path.read_bytes())
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise InputFileError(f"文件为空：{path} / empty file") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise InputFileError(f"{path} 的表头有重复列名：{', '.join(dup)} / duplicate column names")
    rows: list[list[str]] = []
    lines: list[int] = []
    errors: list[RowError] = []
    start = reader.line_num + 1
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(start, f"CSV 格式错误：{exc}"))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not rec or all(not c.strip() for c in rec):
            continue  # blank line: not a record
        if len(rec) != len(header):
            errors.append(RowError(line, f"字段数为 {len(rec)}，表头为 {len(header)} / wrong number of fields"))
            continue
        if any(_has_bad_bytes(c) for c in rec):
            errors.append(RowError(line, f"含有无法按 {enc} 解码的字节 / undecodable bytes"))
            continue
        rows.append(rec)
        lines.append(line)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return Table(frame, lines, errors, enc, len(rows) + len(errors))


def _read_jsonl(path: Path) -> Table:
    text, enc = _decode(path.read_bytes())
    recs: list[dict] = []
    lines: list[int] = []
    errors: list[RowError] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if _has_bad_bytes(line):
            errors.append(RowError(no, f"含有无法按 {enc} 解码的字节 / undecodable bytes"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(RowError(no, f"不是有效的 JSON：{exc.msg} / invalid JSON"))
            continue
        if not isinstance(obj, dict):
            errors.append(RowError(no, "每行应为一个 JSON 对象 / each line must be a JSON object"))
            continue
        recs.append({k: (v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                         if isinstance(v, (dict, list)) else str(v)) for k, v in obj.items()})
        lines.append(no)
    frame = pd.DataFrame.from_records(recs) if recs else pd.DataFrame()
    frame = frame.astype(object)
    return Table(frame, lines, errors, enc, len(recs) + len(errors))


def _stringify(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(object)
    return out.where(pd.notna(out), None).map(lambda v: v if v is None or isinstance(v, str) else str(v))


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a whole table; see :mod:`triage.batch` for chunked reading of very large files."""
    p = Path(path)
    kind = file_kind(p)
    if not p.exists():
        raise InputFileError(f"找不到文件：{p} / file not found")
    try:
        if kind == "csv":
            return _read_csv(p)
        if kind == "jsonl":
            return _read_jsonl(p)
        if kind == "xlsx":
            frame = _stringify(pd.read_excel(p, dtype=object, engine="openpyxl"))
            frame.columns = [str(c).strip() for c in frame.columns]
            return Table(frame, [i + 2 for i in range(len(frame))], [], "xlsx", len(frame))
        frame = _stringify(pd.read_parquet(p))
        return Table(frame, [i + 1 for i in range(len(frame))], [], "parquet", len(frame))
    except InputFileError:
        raise
    except Exception as exc:  # a corrupt workbook or parquet file: say so plainly
        raise InputFileError(f"无法读取 {p}（{kind}）：{exc} / cannot read file") from exc


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
