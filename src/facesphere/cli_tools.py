"""`facesphere clean` and `facesphere invert`: argument parsing only (the work is done by library functions)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any, data_commands: Any) -> None:
    """Add this area's sub-commands to the top-level ``commands`` and the ``data`` sub-command group."""
