"""``python -m vision_trainer.cli``: the ``vision-trainer`` console script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
