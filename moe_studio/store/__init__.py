"""Run files: one SQLite database per run (WAL), writer, reader, live follow, export.
numpy / pandas / sqlite3 only; never Qt, never torch."""
