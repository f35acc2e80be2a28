from .base import Expert
from .clip_vit import CLIPViTExpert
from .videomae_vit import VideoMAEExpert

__all__ = ['Expert', 'CLIPViTExpert', 'VideoMAEExpert']
from .ast import ASTExpert  # noqa: E402

__all__ += ['ASTExpert']
