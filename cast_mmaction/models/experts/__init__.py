from .base import Expert
from .clip_vit import CLIPViTExpert
from .videomae_vit import VideoMAEExpert

__all__ = ['Expert', 'CLIPViTExpert', 'VideoMAEExpert']
from .ast import ASTExpert  # noqa: E402

__all__ += ['ASTExpert']
from .timm_vit import TimmViTExpert  # noqa: E402

__all__ += ['TimmViTExpert']
from .videomae_v2 import VideoMAEv2Expert  # noqa: E402

__all__ += ['VideoMAEv2Expert']
