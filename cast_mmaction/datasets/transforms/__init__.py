"""Registers its modules in MMAction2's registries on import."""
from . import epic  # noqa: F401
from . import rand_augment  # noqa: F401
