"""Datasets and transforms; importing registers them in MMAction2."""
from . import transforms  # noqa: F401
from . import epic_kitchens  # noqa: F401
from . import audio_visual  # noqa: F401,E402 (audio-visual datasets)
from . import robust  # noqa: F401,E402 (RobustDataset, ReproducibleSampler)
