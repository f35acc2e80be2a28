from . import backbones, experts, fusion, heads  # noqa: F401 (registers)
from .backbones import *  # noqa: F401,F403
from .experts import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from . import data_preprocessors  # noqa: F401 (registers blending)
from . import recognizers  # noqa: F401,E402 (registers AudioVisualRecognizer)
from . import data_preprocessors_av  # noqa: F401,E402 (audio-visual batches)
from . import device_augment  # noqa: F401,E402 (DeviceAugmentPreprocessor)
