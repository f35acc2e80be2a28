"""Registers its modules in MMAction2's registries on import."""
from . import hooks  # noqa: F401
from . import optimizers  # noqa: F401
from . import reliability  # noqa: F401,E402 (bad samples, resume, NaN)
