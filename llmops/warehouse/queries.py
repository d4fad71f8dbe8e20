"""Running the report queries in ``reports/queries/*.sql`` against the warehouse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def run_query(warehouse: Path, sql_file: Path) -> list[dict[str, Any]]:
    """Rows of one SQL file run read-only against the warehouse, as dicts."""
    sql = sql_file.read_text(encoding="utf-8")
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()
