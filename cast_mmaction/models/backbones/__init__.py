from .cast import CASTBackbone

__all__ = ['CASTBackbone']
from .msca_vit import MSCAViT  # noqa: E402

__all__ += ['MSCAViT']
from .aim import AIMViT  # noqa: E402
from .st_adapter import STAdapterViT  # noqa: E402

__all__ += ['AIMViT', 'STAdapterViT']
