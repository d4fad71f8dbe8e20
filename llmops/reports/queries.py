"""The report queries in ``reports/queries/*.sql``: their headers, and running them safely.

Each file starts with comment lines that say what it answers and what it reads::

    -- title: Cost by tenant
    -- about: Spend per tenant over the whole warehouse, largest first.
    -- requires: request_log(tenant_id, cost_usd), action_outcomes(action_id, outcome)

``requires`` is what lets a dashboard or a notebook tell "this table is not in the
warehouse yet" (a panel with no data) from a broken query (an error): the tables and
columns are checked before the SQL runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

__all__ = ["QueryFile", "QueryResult", "Status", "load_query", "run_query_file"]

_HEADER = re.compile(r"^--\s*(title|about|requires):\s*(.*?)\s*$")
_TABLE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(([^)]*)\)\s*(?:,|$)")


@dataclass(frozen=True)
class QueryFile:
    """One parsed SQL file: its name (the file stem), header and text."""

    name: str
    path: Path
    title: str
    about: str
    requires: dict[str, tuple[str, ...]]
    sql: str


class Status(StrEnum):
    OK = "ok"  # the query ran and returned rows
    EMPTY = "empty"  # the query ran and returned nothing
    MISSING = "missing"  # a required table or column is not in the warehouse


@dataclass(frozen=True)
class QueryResult:
    """Rows of one query (as dicts, money as Decimal), or why there are none."""

    query: QueryFile
    status: Status
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def frame(self) -> Any:
        """The rows as a pandas DataFrame (columns kept even when there are no rows)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)


def _parse_requires(path: Path, text: str) -> dict[str, tuple[str, ...]]:
    requires: dict[str, tuple[str, ...]] = {}
    pos = 0
    while pos < len(text):
        match = _TABLE.match(text, pos)
        if not match:
            raise ConfigError(
                str(path), "requires", f"expected 'table(col, col), ...', got {text[pos:]!r}"
            )
        columns = tuple(c.strip() for c in match.group(2).split(",") if c.strip())
        requires[match.group(1)] = columns
        pos = match.end()
    return requires


def load_query(path: Path) -> QueryFile:
    """Read and parse one SQL file; a missing file or header is a ConfigError."""
    try:
        sql = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "file", f"cannot read: {exc.strerror or exc}") from exc
    header: dict[str, str] = {}
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        match = _HEADER.match(line)
        if match:
            header[match.group(1)] = match.group(2)
    for key in ("title", "requires"):
        if not header.get(key):
            raise ConfigError(str(path), key, f"missing the '-- {key}: ...' header line")
    return QueryFile(
        name=path.stem,
        path=path,
        title=header["title"],
        about=header.get("about", ""),
        requires=_parse_requires(path, header["requires"]),
        sql=sql,
    )


def missing_inputs(con: duckdb.DuckDBPyConnection, query: QueryFile) -> list[str]:
    """Required tables and columns the warehouse lacks, as ``table`` or ``table.column``."""
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall()
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(str(table), set()).add(str(column))
    missing: list[str] = []
    for table, columns in query.requires.items():
        if table not in present:
            missing.append(table)
        else:
            missing.extend(f"{table}.{c}" for c in columns if c not in present[table])
    return missing


def run_query_file(con: duckdb.DuckDBPyConnection, query: QueryFile | Path) -> QueryResult:
    """Run one query, or say which of its inputs the warehouse does not have yet."""
    if isinstance(query, Path):
        query = load_query(query)
    missing = missing_inputs(con, query)
    if missing:
        return QueryResult(
            query, Status.MISSING, reason="not in the warehouse yet: " + ", ".join(missing)
        )
    cursor = con.execute(query.sql)
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return QueryResult(query, Status.OK if rows else Status.EMPTY, columns, rows)
