"""Reports over the DuckDB warehouse: the SQL in ``reports/queries/`` and the HTML dashboard."""
