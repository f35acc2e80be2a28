"""Registers its modules in MMAction2's registries on import."""
from . import decoding  # noqa: F401
from . import epic  # noqa: F401
from . import rand_augment  # noqa: F401
from . import sampling  # noqa: F401
from . import audio  # noqa: F401,E402 (audio-visual input)
from . import pack_raw  # noqa: F401,E402 (PackRawFrames)
from . import clip_peft_sampling  # noqa: F401,E402 (ST-Adapter's)
