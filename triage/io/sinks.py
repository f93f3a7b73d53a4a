"""Streaming table writers: frames appended one after another, the file appearing only when complete.

Each writer fills ``OUTPUT.partial`` and renames it over ``OUTPUT`` in :meth:`TableSink.close`, so a
reader never sees half a file; :meth:`TableSink.abort` removes the partial file. CSV is UTF-8 with a
BOM so that Excel on Windows opens Chinese correctly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from triage.errors import OutputFileError
from triage.io.streams import file_kind

#: the columns the batch writes as numbers; everything else is text
FLOAT_COLUMNS = ("domain_confidence", "scope_confidence")

XLSX_MAX_ROWS = 1_048_575  # a worksheet holds 1,048,576 rows, one of them the header


class TableSink:
    """Appends frames with the columns given at creation (missing ones written empty)."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame.reindex(columns=self.columns)
        self._write(frame)
        self.rows += len(frame)

    def _write(self, frame: pd.DataFrame) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        """Flush and close the partial file."""

    def close(self) -> None:
        self._finish()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._finish()
        finally:
            self.tmp.unlink(missing_ok=True)


class _TextSink(TableSink):
    encoding = "utf-8"

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        super().__init__(path, columns)
        self._f = open(self.tmp, "w", encoding=self.encoding, newline="")

    def _finish(self) -> None:
        if not self._f.closed:
            self._f.close()


class CsvSink(_TextSink):
    encoding = "utf-8-sig"

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        super().__init__(path, columns)
        self.sep = "\t" if self.path.suffix.lower() == ".tsv" else ","
        pd.DataFrame(columns=self.columns).to_csv(self._f, index=False, sep=self.sep)

    def _write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self._f, index=False, header=False, sep=self.sep)


class JsonlSink(_TextSink):
    def _write(self, frame: pd.DataFrame) -> None:
        if len(frame):
            text = frame.to_json(orient="records", lines=True, force_ascii=False)
            self._f.write(text if text.endswith("\n") else text + "\n")


class ParquetSink(TableSink):
    """One schema for the whole file: text columns as strings, confidences as float64."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, columns)
        self.schema = pa.schema([(c, pa.float64() if c in FLOAT_COLUMNS else pa.string()) for c in self.columns])
        self._w = pq.ParquetWriter(self.tmp, self.schema)

    def _write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        cols = {c: (frame[c].astype("float64") if c in FLOAT_COLUMNS else frame[c].astype(object))
                for c in self.columns}
        arrays = [pa.array(cols[c], type=self.schema.field(c).type, from_pandas=True) for c in self.columns]
        self._w.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def _finish(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


class XlsxSink(TableSink):
    """openpyxl's write-only workbook (rows streamed to a temporary file, not held as cells)."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        from openpyxl import Workbook

        super().__init__(path, columns)
        self._wb = Workbook(write_only=True)
        self._ws = self._wb.create_sheet()
        self._ws.append(self.columns)

    def _write(self, frame: pd.DataFrame) -> None:
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        if self.rows + len(frame) > XLSX_MAX_ROWS:
            raise OutputFileError(
                f"结果超过 Excel 工作表的行数上限（{XLSX_MAX_ROWS:,} 行），请输出为 CSV 或 Parquet / "
                f"too many rows for an .xlsx sheet: write .csv or .parquet instead")
        for row in frame.itertuples(index=False, name=None):
            self._ws.append([None if v is None or (isinstance(v, float) and math.isnan(v))
                             else ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in row])

    def _finish(self) -> None:
        if self._wb is not None:
            self._wb.save(self.tmp)
            self._wb = None


class StdoutCsvSink(TableSink):
    """CSV on standard output (for pipes): nothing to rename, so nothing atomic either."""

    def __init__(self, columns: Sequence[str]) -> None:
        import sys

        self.columns, self.rows, self._f = list(columns), 0, sys.stdout
        pd.DataFrame(columns=self.columns).to_csv(self._f, index=False)

    def _write(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self._f, index=False, header=False)

    def close(self) -> None:
        self._f.flush()

    def abort(self) -> None:
        self._f.flush()


_SINKS: dict[str, type[TableSink]] = {"csv": CsvSink, "jsonl": JsonlSink, "parquet": ParquetSink, "xlsx": XlsxSink}


def open_sink(path: str | os.PathLike[str], columns: Sequence[str]) -> TableSink:
    """The writer for a file, chosen by its extension."""
    return _SINKS[file_kind(path)](path, columns)


@dataclass
class Target:
    """Where a batch run's results go: a sink for the rows and paths for the side reports (a file or a
    database table: :func:`triage.batch.runner.file_target`, :func:`triage.io.databases.table_target`)."""

    label: str                               # the output as named in the summary
    open: Callable[[list[str]], Any]         # columns → TableSink
    work_dir: Path
    errors: Path | None
    changes: Path | None
    identity: dict[str, Any]                 # part of the resume manifest
    temporary: bool = False                  # no resume (stdout): the work directory is always fresh
