"""Registers its modules in MMAction2's registries on import."""
from . import hooks  # noqa: F401 (one module per hook)
from . import guarded_optim_wrapper  # noqa: F401 (non-finite loss guard)
from . import cuda_graph  # noqa: F401 (CUDA-graph training loops)
from . import optimizers  # noqa: F401
from . import trainable_checkpoint  # noqa: F401 (trainable-only ckpts)
from . import strategies  # noqa: F401 (FSDP wrap policy)
from . import schedulers  # noqa: F401 (the authors' warm-up + cosine)
from . import fsdp2  # noqa: F401 (FSDP2Strategy in MMEngine's STRATEGIES)
