from .cast import CASTBackbone

__all__ = ['CASTBackbone']
from .msca_vit import MSCAViT  # noqa: E402

__all__ += ['MSCAViT']
