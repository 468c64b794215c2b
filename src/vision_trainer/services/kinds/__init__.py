"""The kinds of job, each a module of its own, and the registry the job machinery looks them up in.

A new kind is one module (its name, params model, inputs, run and messages; see ``work.kind.JobKind``)
and one line below.
"""

from __future__ import annotations

from ..work.kind import KindRegistry
from . import analyze, export, train

KINDS = KindRegistry()
KINDS.register_kind(train.KIND)
KINDS.register_kind(analyze.KIND)
KINDS.register_kind(export.KIND)
