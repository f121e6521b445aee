"""Deprecated import path: this module moved to :mod:`facesphere.run.config` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from ..run.config import *  # noqa: F401,F403
from ..run.config import __all__  # noqa: F401

warnings.warn("facesphere.train.config moved to facesphere.run.config; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)
