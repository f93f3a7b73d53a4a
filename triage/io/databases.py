"""A database as batch input (a query, streamed) and output (a new table, appearing when complete).

A resumed run re-reads the query and skips the chunks it has done, which is only right if the
query returns the same rows in the same order every time: the query must end in ``ORDER BY`` a
unique key, and the data must not change between the runs. Checked: the query's last clause is
``ORDER BY`` plain columns (optionally ``LIMIT``/``OFFSET``), those columns are in its result, and no
two rows in a row share their values (in an ordered result, equal keys would be neighbours). Refused
otherwise, before the first row or at the first repeated key, with the line. Not checked: that the data
stays unchanged between runs.
The "line" of a row in the errors file is its 1-based position in the query result.

Results are written into ``NAME__triage_partial`` and renamed to ``NAME`` at the end, so the table
appears only when complete; an existing ``NAME`` is refused unless ``replace`` is asked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from triage.errors import InputFileError, OutputFileError
from triage.io.sinks import FLOAT_COLUMNS, TableSink
from triage.io.streams import Chunk, TableSource, _cell

_KEY = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*)(?:\.(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][A-Za-z0-9_]*))?'
_KEY_TERM = rf"{_KEY}(?:\s+(?:asc|desc))?(?:\s+nulls\s+(?:first|last))?"
#: ORDER BY plain columns as the query's last clause (LIMIT/OFFSET may follow); anchored at the end,
#: so an ORDER BY inside a subquery or before a UNION does not pass
_ORDER_TAIL = re.compile(rf"\border\s+by\s+(?P<keys>{_KEY_TERM}(?:\s*,\s*{_KEY_TERM})*)"
                         r"(?:\s+limit\s+\d+(?:\s+offset\s+\d+)?)?\s*;?\s*$", re.IGNORECASE)
_KEY_RE = re.compile(_KEY)


def order_keys(query: str) -> list[str]:
    """The column names of the query's final ORDER BY (``t.id`` → ``id``, quotes dropped)."""
    # comments read as nothing ("… FROM t -- ORDER BY id" has no ORDER BY)
    bare = re.sub(r"/\*.*?\*/", " ", re.sub(r"--[^\n]*", " ", query), flags=re.S)
    m = _ORDER_TAIL.search(bare)
    if not m:
        raise InputFileError(
            "查询必须以 ORDER BY 唯一键结尾（例如 ORDER BY id；键为结果中的列名），否则中断后无法按相同顺序继续 / "
            "the query must end in ORDER BY a unique key (plain result columns) so that a stopped run can resume")
    keys = []
    for term in m.group("keys").split(","):
        name = _KEY_RE.match(term.strip()).group(0).split(".")[-1]
        keys.append(name.strip('"`[]'))
    return keys
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def masked_url(url: str) -> str:
    """The URL without its password (it goes into manifests, logs and summaries)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return create_engine(url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise InputFileError(f"无法识别的数据库地址 {url!r}：{exc} / bad SQLAlchemy URL") from exc


class DbSource(TableSource):
    """The rows of a query, fetched ``rows`` at a time over a server-side cursor where available."""

    kind = "db"

    def __init__(self, url: str, query: str) -> None:  # noqa: D107 - no file to check
        self.keys = order_keys(query)
        self.url, self.query = url, query
        self.path = Path(masked_url(url))
        self.encoding = "db"
        self.total_hint = None

    @property
    def size(self) -> int:
        return 0

    @property
    def label(self) -> str:
        return f"{masked_url(self.url)} ({self.query})"

    def identity(self) -> dict:
        return {"kind": "db", "url": masked_url(self.url),
                "query_sha256": hashlib.sha256(self.query.encode("utf-8")).hexdigest()}

    def _chunks(self, rows: int) -> Iterator[Chunk]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        engine = _engine(self.url)
        first = 1
        index = 0
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=rows).execute(text(self.query))
                cols = [str(k) for k in result.keys()]
                lower = [c.lower() for c in cols]
                missing = [k for k in self.keys if k.lower() not in lower]
                if missing:
                    raise InputFileError(f"排序键 {', '.join(missing)} 不在查询结果的列中，无法核对其唯一性；请在 SELECT 中包含它 / "
                                         f"the ORDER BY key {', '.join(missing)} must be a column of the result")
                at = [lower.index(k.lower()) for k in self.keys]
                last = None
                for part in result.partitions(rows):
                    for k, r in enumerate(part):
                        key = tuple(r[i] for i in at)
                        if key == last:
                            raise InputFileError(
                                f"第 {first + k} 行与上一行的排序键（{', '.join(self.keys)} = {', '.join(map(str, key))}）相同："
                                f"排序键不唯一，中断后无法按相同顺序继续；请按唯一键排序（例如 ORDER BY id）/ line {first + k} "
                                f"repeats the ORDER BY key of the line before: order by a unique key")
                        last = key
                    frame = pd.DataFrame([[_cell(v) for v in r] for r in part], columns=cols, dtype=object)
                    yield Chunk(index, frame, list(range(first, first + len(frame))))
                    first += len(frame)
                    index += 1
                if index == 0:
                    yield Chunk(0, pd.DataFrame(columns=cols, dtype=object), [])
        except SQLAlchemyError as exc:
            raise InputFileError(f"查询失败：{exc.__class__.__name__}: {str(exc).splitlines()[0]} / query failed") from exc
        finally:
            engine.dispose()


class TableSinkDb(TableSink):
    """Appends to a staging table; :meth:`close` renames it to the asked name in one transaction."""

    def __init__(self, url: str, table: str, columns: Sequence[str], replace: bool) -> None:
        from sqlalchemy import Column, Float, Integer, MetaData, Table, Text

        self.columns, self.rows = list(columns), 0
        self.table, self.replace = table, replace
        self.staging = f"{table}__triage_partial"
        self.engine = _engine(url)
        self.meta = MetaData()
        cols = [Column("row_number", Integer, primary_key=True)]
        cols += [Column(c, Float if c in FLOAT_COLUMNS else Text) for c in self.columns]
        self.sa_table = Table(self.staging, self.meta, *cols)
        self.sa_table.drop(self.engine, checkfirst=True)
        self.sa_table.create(self.engine)

    def _write(self, frame: pd.DataFrame) -> None:
        records: list[dict[str, Any]] = []
        for i, row in enumerate(frame.itertuples(index=False, name=None), start=self.rows + 1):
            rec = {"row_number": i}
            for c, v in zip(self.columns, row):
                rec[c] = None if v is None or (isinstance(v, float) and v != v) else v
            records.append(rec)
        if records:
            with self.engine.begin() as conn:
                conn.execute(self.sa_table.insert(), records)

    def close(self) -> None:
        from sqlalchemy import inspect, text

        with self.engine.begin() as conn:
            if inspect(conn).has_table(self.table):
                if not self.replace:
                    raise OutputFileError(_exists(self.table))
                conn.execute(text(f'DROP TABLE "{self.table}"'))
            conn.execute(text(f'ALTER TABLE "{self.staging}" RENAME TO "{self.table}"'))
        self.engine.dispose()

    def abort(self) -> None:
        try:
            self.sa_table.drop(self.engine, checkfirst=True)
        finally:
            self.engine.dispose()


def _exists(table: str) -> str:
    return f"表 {table} 已存在；加 --replace 覆盖，或换一个表名 / table exists: use --replace or another name"


def table_target(url: str | None, table: str, replace: bool = False, work_dir: str | None = None):
    """Results into a new table ``table`` of ``url``; checkpoints in ``./TABLE.partial.d``."""
    from sqlalchemy import inspect

    from triage.io.sinks import Target

    if not url:
        raise InputFileError("--to-table 需要数据库地址（--from-db 或 --to-db）/ --to-table needs a database URL")
    if not _NAME.match(table):
        raise OutputFileError(f"表名 {table!r} 只能含字母、数字和下划线 / table name: letters, digits, underscores")
    engine = _engine(url)
    try:
        if inspect(engine).has_table(table) and not replace:
            raise OutputFileError(_exists(table))
    finally:
        engine.dispose()
    wd = Path(work_dir) if work_dir else Path.cwd() / f"{table}.partial.d"
    base = wd.parent / table
    return Target(f"{masked_url(url)} table {table}", lambda cols: TableSinkDb(url, table, cols, replace), wd,
                  base.with_name(f"{table}.errors.csv"), base.with_name(f"{table}.changes.csv"),
                  {"url": masked_url(url), "table": table})
