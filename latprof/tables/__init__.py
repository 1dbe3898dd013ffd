"""Latency tables: Parquet I/O and schema, the sweep store, merge, upgrade, remote tables, request files, reports."""
