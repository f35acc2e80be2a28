"""Registers its modules in MMAction2's registries on import."""
from . import hooks  # noqa: F401
from . import optimizers  # noqa: F401
from . import reliability  # noqa: F401,E402 (bad samples, resume, NaN)
from . import trainable_checkpoint  # noqa: F401,E402 (trainable-only ckpts)
from . import strategies  # noqa: F401,E402 (FSDP wrap policy)
from . import schedulers  # noqa: F401,E402 (the authors' warm-up + cosine)
