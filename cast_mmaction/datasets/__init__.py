"""Datasets and transforms; importing registers them in MMAction2."""
from . import transforms  # noqa: F401
