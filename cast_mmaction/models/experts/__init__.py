from .base import Expert
from .clip_vit import CLIPViTExpert
from .videomae_vit import VideoMAEExpert

__all__ = ['Expert', 'CLIPViTExpert', 'VideoMAEExpert']
