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
from .av_official import (CA2ST_KEY_MAP, CAVA_KEY_MAP,  # noqa: E402
                          convert_official_av, load_official_av)
from .ast import load_ast_expert, read_ast  # noqa: E402

__all__ += ['CAVA_KEY_MAP', 'CA2ST_KEY_MAP', 'convert_official_av',
            'load_official_av', 'load_ast_expert', 'read_ast']
