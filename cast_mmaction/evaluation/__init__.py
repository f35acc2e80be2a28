"""Registers its modules in MMAction2's registries on import."""
from . import epic_metric  # noqa: F401
from . import epic_sounds_metric  # noqa: F401
from . import bad_sample_metric  # noqa: F401
