"""Command line: ``vision-trainer serve | worker | datasets | train | predict | export | models``.

Every command but ``serve`` and ``worker`` works directly on the data dir (``VT_DATA_DIR``) through the same
services, and so the same checks, as the HTTP API. Each prints one JSON document on stdout; logs, progress
bars and errors go to stderr, so ``vision-trainer ... | jq`` always reads clean JSON. A refused request prints
``error (code): detail`` and exits 2; a training job that ends failed or cancelled exits 1.

Modules: ``main`` wires the parser, ``common`` holds the output helpers, ``folders`` turns files on disk
into uploads, ``follow`` runs and shows a job, and one module per group of commands.
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
