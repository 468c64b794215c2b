"""Storage: SQL metadata (SQLAlchemy 2; SQLite by default) and artifact files under the data dir."""
