"""A training run on disk: its typed config, its checkpoints, and loading it back.

The layer every workflow shares: training writes runs, and evaluation, inference, cleaning and inversion read them,
all through :func:`load_run` (see :mod:`.directory` for the layout).
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, load_config, save_config
from .directory import (
           checkpoint_path,
           config_of,
           default_run_dir,
           load_run,
           read_run_config,
)

__all__ = ["Config", "load_config", "save_config", "load_checkpoint", "save_checkpoint", "load_run",
           "read_run_config", "config_of", "checkpoint_path", "default_run_dir"]
