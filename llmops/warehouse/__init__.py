"""The DuckDB warehouse: incremental loads from the ops DB and report queries."""
