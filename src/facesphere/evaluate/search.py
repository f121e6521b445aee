"""Deprecated import path: this module moved to :mod:`facesphere.infer.search` (docs/architecture.md); the old path
re-exports it for one release (removed in facesphere 0.3)."""

import warnings

from ..infer.search import *  # noqa: F401,F403
from ..infer.search import __all__  # noqa: F401

warnings.warn("facesphere.evaluate.search moved to facesphere.infer.search; import it from there (the old path goes in facesphere 0.3)",
              DeprecationWarning, stacklevel=2)
