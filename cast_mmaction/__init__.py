"""cast_mmaction: CAST, CAVA / CA2ST and MSCA for MMAction2.

Importing the package applies the ecosystem work-arounds of ``compat`` and
registers every model, dataset, transform, metric and hook in MMAction2's
registries, so ``custom_imports = dict(imports=['cast_mmaction'])`` is all a
config needs.
"""
from . import compat

compat.apply()

from . import datasets, engine, evaluation, models  # noqa: E402,F401

__version__ = '0.1.0'
