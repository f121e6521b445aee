"""``python -m facesphere.cli`` (what ``torchrun ... -m facesphere.cli train`` runs)."""

from . import main

raise SystemExit(main())
