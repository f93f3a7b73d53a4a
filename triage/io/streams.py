"""Streaming table readers: a file read in chunks of rows, every row keeping its line number.

A million-row file must not be held in memory, and a resumed batch run must cut the file into the
same chunks as the first run: a chunk is always ``rows`` consecutive *records* (readable or not;
blank lines are not records), so chunk ``k`` covers the same lines whatever happened before.

Every reader yields :class:`Chunk` objects: the readable rows as a frame of strings (object dtype,
``None`` for a missing value), the line a clerk would see for each row (CSV/JSONL: the physical line
where the record starts; XLSX: the sheet row; Parquet and database results: the 1-based row), and
the records of that range that could not be read at all (wrong field count, invalid JSON,
undecodable bytes), as :class:`RowError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from triage.errors import InputFileError

SUPPORTED = {".csv": "csv", ".tsv": "csv", ".xlsx": "xlsx", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}

#: the encoding is decided from the start of the file (a GB18030 file is rarely valid UTF-8 for a MB)
SAMPLE_BYTES = 1 << 20

#: the csv module refuses fields over 128 KiB with an error that says nothing useful to a clerk; we
#: read up to this many characters so that an over-long text is reported as over-long
CSV_FIELD_LIMIT = 1 << 24


@dataclass
class RowError:
    line: int
    reason: str
    column: str = ""


@dataclass
class Chunk:
    """``rows`` consecutive records of the input (the last chunk may be shorter)."""

    index: int
    frame: pd.DataFrame                         # readable rows, all values str or None
    lines: list[int]                            # input line of each frame row
    errors: list[RowError] = field(default_factory=list)  # records of this range that could not be read
    position: int = 0                           # bytes of the input consumed so far (progress only)

    @property
    def records(self) -> int:
        return len(self.frame) + len(self.errors)


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
    sample = raw[:SAMPLE_BYTES]
    for enc in ("utf-8", "gb18030"):
        try:
            sample.decode(enc)
            return enc
        except UnicodeDecodeError as exc:
            # a multi-byte character cut at the sample's end is not a decoding failure
            if len(sample) == SAMPLE_BYTES and exc.start >= len(sample) - 4:
                return enc
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    return best.encoding if best is not None else "utf-8"


def sniff_encoding(path: Path, limit: int = 64 * SAMPLE_BYTES) -> str:
    """:func:`detect_encoding` on the first MB that has a non-ASCII byte (ASCII reads the same in
    every candidate). A file whose first MB is ids and dates only still has its Chinese further on;
    deciding "UTF-8" from the ASCII head would turn every GB18030 row after it into an error."""
    with path.open("rb") as f:
        head = f.read(SAMPLE_BYTES)
        if head.startswith(b"\xef\xbb\xbf") or not head.isascii():
            return detect_encoding(head)
        read = len(head)
        while read < limit:
            block = f.read(SAMPLE_BYTES)
            if not block:
                break
            read += len(block)
            if not block.isascii():
                first = next(i for i, b in enumerate(block) if b >= 0x80)  # a character starts here
                return detect_encoding(block[first:] + f.read(first))
    return "utf-8"


def has_bad_bytes(s: str) -> bool:
    """True when decoding met bytes of no character (kept as lone surrogates by surrogateescape)."""
    return any("\udc80" <= c <= "\udcff" for c in s)


def fingerprint(path: str | os.PathLike[str]) -> dict:
    """Size, mtime and hashes of the first and last MB: enough to tell a resumed run that the input
    it is continuing is the file the first run started on, without reading a 2 GB file again."""
    p = Path(path)
    st = p.stat()
    with p.open("rb") as f:
        head = hashlib.sha256(f.read(SAMPLE_BYTES)).hexdigest()
        f.seek(max(0, st.st_size - SAMPLE_BYTES))
        tail = hashlib.sha256(f.read(SAMPLE_BYTES)).hexdigest()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "head_sha256": head, "tail_sha256": tail}


def _stringify(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(object)
    return out.where(pd.notna(out), None).map(lambda v: v if v is None or isinstance(v, str) else str(v))


def _cell(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


class TableSource:
    """One input, read in chunks; subclasses know one format."""

    kind = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.encoding = ""
        self.total_hint: int | None = None     # rows, when the format knows it before reading
        if not self.path.exists():
            raise InputFileError(f"找不到文件：{self.path} / file not found")

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def label(self) -> str:
        return str(self.path)

    def identity(self) -> dict:
        return {"kind": self.kind, **fingerprint(self.path)}

    def chunks(self, rows: int) -> Iterator[Chunk]:
        try:
            yield from self._chunks(rows)
        except InputFileError:
            raise
        except (OSError, ValueError, KeyError, csv.Error, UnicodeError) as exc:
            raise InputFileError(f"无法读取 {self.path}（{self.kind}）：{exc} / cannot read file") from exc
        except Exception as exc:  # a corrupt workbook or parquet file: say so plainly
            if type(exc).__module__.split(".")[0] in ("pyarrow", "openpyxl", "zipfile"):
                raise InputFileError(f"无法读取 {self.path}（{self.kind}）：{exc} / cannot read file") from exc
            raise

    def _chunks(self, rows: int) -> Iterator[Chunk]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_header(self, header: list[str]) -> list[str]:
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise InputFileError(f"{self.path} 的表头有重复列名：{', '.join(dup)} / duplicate column names")
        return header


class _Batcher:
    """Collects records into chunks of ``rows`` records (readable or not)."""

    def __init__(self, rows: int, columns: list[str] | None) -> None:
        self.rows, self.columns = rows, columns
        self.index = 0
        self._reset()

    def _reset(self) -> None:
        self.values: list = []
        self.lines: list[int] = []
        self.errors: list[RowError] = []

    def add(self, line: int, values) -> None:
        self.values.append(values)
        self.lines.append(line)

    def fail(self, line: int, reason: str) -> None:
        self.errors.append(RowError(line, reason))

    @property
    def full(self) -> bool:
        return len(self.values) + len(self.errors) >= self.rows

    @property
    def empty(self) -> bool:
        return not self.values and not self.errors

    def emit(self, position: int = 0) -> Chunk:
        if self.columns is None:  # records of varying keys (JSONL)
            frame = pd.DataFrame.from_records(self.values) if self.values else pd.DataFrame()
            frame = frame.astype(object)
            frame = frame.where(pd.notna(frame), None)
        else:
            frame = pd.DataFrame(self.values, columns=self.columns, dtype=object)
        chunk = Chunk(self.index, frame, self.lines, self.errors, position)
        self.index += 1
        self._reset()
        return chunk


class CsvSource(TableSource):
    """CSV/TSV over a decoded text stream; the encoding is decided from the first MB (with text)."""

    kind = "csv"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.encoding = sniff_encoding(self.path)
        self.delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _chunks(self, rows: int) -> Iterator[Chunk]:
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        enc = self.encoding
        with self.path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding=enc, errors="surrogateescape", newline="")
            reader = csv.reader(text, delimiter=self.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise InputFileError(f"文件为空：{self.path} / empty file") from None
            header = self._check_header([h.strip() for h in header])
            batch = _Batcher(rows, header)
            start = reader.line_num + 1
            while True:
                try:
                    rec = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    batch.fail(start, f"CSV 格式错误：{exc} / malformed CSV")
                    start = reader.line_num + 1
                else:
                    line, start = start, reader.line_num + 1
                    if not rec or all(not c.strip() for c in rec):
                        continue  # blank line: not a record
                    if len(rec) != len(header):
                        batch.fail(line, f"字段数为 {len(rec)}，表头为 {len(header)} / wrong number of fields")
                    elif any(has_bad_bytes(c) for c in rec):
                        batch.fail(line, f"含有无法按 {enc} 解码的字节 / undecodable bytes")
                    else:
                        batch.add(line, rec)
                if batch.full:
                    yield batch.emit(raw.tell())
            if not batch.empty or batch.index == 0:
                yield batch.emit(raw.tell())


class JsonlSource(TableSource):
    """One JSON object per line (lines split at ``\\n`` only, as JSON Lines defines)."""

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.encoding = sniff_encoding(self.path)

    def _chunks(self, rows: int) -> Iterator[Chunk]:
        enc = self.encoding
        batch = _Batcher(rows, None)
        with self.path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding=enc, errors="surrogateescape", newline="\n")
            for no, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                if has_bad_bytes(line):
                    batch.fail(no, f"含有无法按 {enc} 解码的字节 / undecodable bytes")
                else:
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        batch.fail(no, f"不是有效的 JSON：{exc.msg} / invalid JSON")
                    else:
                        if isinstance(obj, dict):
                            batch.add(no, {str(k): _cell(v) for k, v in obj.items()})
                        else:
                            batch.fail(no, "每行应为一个 JSON 对象 / each line must be a JSON object")
                if batch.full:
                    yield batch.emit(raw.tell())
            if not batch.empty or batch.index == 0:
                yield batch.emit(raw.tell())


class ParquetSource(TableSource):
    """Parquet through pyarrow's batch iterator (row groups are never loaded whole)."""

    kind = "parquet"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.encoding = "parquet"
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a corrupt file
            raise InputFileError(f"无法读取 {self.path}（parquet）：{exc} / cannot read file") from exc
        self.total_hint = self._file.metadata.num_rows

    def _chunks(self, rows: int) -> Iterator[Chunk]:
        first = 1
        index = 0
        names = list(self._file.schema_arrow.names)
        for batch in self._file.iter_batches(batch_size=rows):
            frame = _stringify(batch.to_pandas())
            frame.columns = [str(c).strip() for c in frame.columns]
            yield Chunk(index, frame, list(range(first, first + len(frame))), [],
                        int(self.size * min(1.0, (first + len(frame) - 1) / max(1, self.total_hint or 1))))
            first += len(frame)
            index += 1
        if index == 0:
            yield Chunk(0, pd.DataFrame(columns=names, dtype=object), [], [], self.size)


class XlsxSource(TableSource):
    """The first sheet of a workbook, through openpyxl's read-only (streaming) mode."""

    kind = "xlsx"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.encoding = "xlsx"

    def _chunks(self, rows: int) -> Iterator[Chunk]:
        from openpyxl import load_workbook

        wb = load_workbook(self.path, read_only=True, data_only=True)
        try:
            ws = wb.worksheets[0]
            self.total_hint = max(0, (ws.max_row or 1) - 1) or None
            it = ws.iter_rows(values_only=True)
            try:
                head = next(it)
            except StopIteration:
                raise InputFileError(f"文件为空：{self.path} / empty file") from None
            header = [str(h).strip() if h is not None else f"Unnamed: {i}" for i, h in enumerate(head)]
            while header and header[-1].startswith("Unnamed: "):
                header.pop()  # trailing empty header cells: formatting, not columns
            header = self._check_header(header)
            batch = _Batcher(rows, header)
            width = len(header)
            done = 0
            for no, row in enumerate(it, start=2):
                cells = [_cell(v) for v in row]
                if all(c is None or not str(c).strip() for c in cells):
                    continue
                extra = [c for c in cells[width:] if c is not None and str(c).strip()]
                if extra:
                    batch.fail(no, f"字段数多于表头（表头 {width} 列）/ wrong number of fields")
                else:
                    batch.add(no, (cells + [None] * width)[:width])
                done += 1
                if batch.full:
                    yield batch.emit(int(self.size * min(1.0, done / max(1, self.total_hint or done))))
            if not batch.empty or batch.index == 0:
                yield batch.emit(self.size)
        finally:
            wb.close()


_SOURCES: dict[str, type[TableSource]] = {"csv": CsvSource, "jsonl": JsonlSource, "parquet": ParquetSource,
                                          "xlsx": XlsxSource}


def open_source(path: str | os.PathLike[str]) -> TableSource:
    """The reader for a file, chosen by its extension."""
    return _SOURCES[file_kind(path)](path)
