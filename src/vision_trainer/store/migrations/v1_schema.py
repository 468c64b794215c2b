"""The v1 schema, frozen: what databases had before migrations existed (revision 0001 creates it).

Kept apart from ``tables.py`` so that later changes of the ORM never change what 0001 means.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text

metadata = MetaData()

Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), index=True),
    Column("created_at", DateTime(timezone=True), index=True),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("params", JSON),
    Column("class_names", JSON),
    Column("inputs", JSON),
    Column("phase", String(16)),
    Column("done", Integer),
    Column("total", Integer),
    Column("epoch", Integer),
    Column("metrics", JSON),
    Column("model_id", String(32)),
    Column("error", Text),
    Column("cancel_requested", Boolean),
    Column("attempts", Integer),
    Column("worker_id", String(200)),
    Column("heartbeat_at", DateTime(timezone=True), index=True),
    Column("duration_s", Float),
    Column("images_per_s", Float),
)
Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", ForeignKey("jobs.id", ondelete="CASCADE"), index=True),
    Column("kind", String(16)),
    Column("data", JSON),
    Column("created_at", DateTime(timezone=True)),
)
Table(
    "models",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(32), unique=True),
    Column("name", String(200)),
    Column("class_names", JSON),
    Column("backbone", String(64)),
    Column("created_at", DateTime(timezone=True), index=True),
    Column("params", JSON),
    Column("data", JSON),
    Column("history", JSON),
    Column("metrics", JSON),
)
Table(
    "aliases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("model_id", ForeignKey("models.id", ondelete="CASCADE")),
)
