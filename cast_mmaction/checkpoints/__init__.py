from .cast_official import (CAST_KEY_MAP, convert_official_cast,
                            load_official_cast)
from .clip import load_clip_expert, read_clip_visual
from .videomae import load_videomae_expert, read_videomae

__all__ = ['CAST_KEY_MAP', 'convert_official_cast', 'load_official_cast',
           'load_clip_expert', 'read_clip_visual', 'load_videomae_expert',
           'read_videomae']
from .converters import CONVERTERS, detect_kind, register_converter  # noqa: E402

__all__ += ['CONVERTERS', 'detect_kind', 'register_converter']
from .timm_vit import (convert_official_msca, load_official_msca,  # noqa: E402
                       load_timm_vit, read_timm_vit)

__all__ += ['convert_official_msca', 'load_official_msca', 'load_timm_vit',
            'read_timm_vit']
