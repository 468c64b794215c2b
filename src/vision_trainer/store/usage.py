"""How many bytes the stored data takes: folders of the data dir, and the database."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from .db import Database

_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def tree_bytes(path: Path, *, skip: Path | None = None) -> int:
    """Sizes of the files under ``path`` (or of ``path`` itself when it is a file), links not followed;
    ``skip`` (a folder somewhere below) is left out. Files that vanish while counting count as 0."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if skip is None or Path(entry.path) != skip:
                        stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


def sqlite_files(db: Database) -> list[Path]:
    """The files of a SQLite database (main file, WAL, shared memory, journal); none for other databases."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return []
    main = Path(url.database).resolve()
    return [main.with_name(main.name + suffix) for suffix in _SQLITE_SIDE_FILES]


def database_bytes(db: Database) -> int:
    """Bytes the database takes: its SQLite files, or PostgreSQL's ``pg_database_size``; 0 for others."""
    backend = db.engine.url.get_backend_name()
    if backend == "sqlite":
        return sum(tree_bytes(path) for path in sqlite_files(db))
    if backend == "postgresql":
        with db.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    return 0
