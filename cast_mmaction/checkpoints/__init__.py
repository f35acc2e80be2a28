"""Weights: expert loaders (``clip``, ``videomae``, ``ast``, ``timm_vit``),
the official converters (key tables in ``cast_official`` / ``av_official`` /
``timm_vit`` from the shared rows of ``key_rows``, records in ``registry``)
and the state-dict toolkit (``state_dict``) they all fit weights with.
Layout: docs/checkpoints.md."""
from .ast import load_ast_expert, read_ast
from .av_official import CA2ST_KEY_MAP, CAVA_KEY_MAP
from .cast_official import CAST_KEY_MAP
from .clip import load_clip_expert, read_clip_visual
from .registry import (CONVERTERS, Converter, convert_official,
                       convert_official_av, convert_official_cast,
                       convert_official_msca, convert_state, detect_kind,
                       load_official, load_official_aim, load_official_av,
                       load_official_cast, load_official_msca,
                       load_official_st_adapter, with_tower)
from .state_dict import (CheckpointFitError, FitReport, check_fit,
                         fit_report, load_fitted, select_prefix,
                         strip_prefixes)
from .timm_expert import load_timm_expert, read_timm_expert
from .timm_vit import load_timm_vit, read_timm_vit
from .videomae import load_videomae_expert, read_videomae
from .videomae_v2 import load_videomae_v2_expert, read_videomae_v2

__all__ = [
    'load_ast_expert', 'read_ast', 'load_clip_expert', 'read_clip_visual',
    'load_videomae_expert', 'read_videomae', 'load_timm_vit',
    'read_timm_vit', 'CAST_KEY_MAP', 'CAVA_KEY_MAP', 'CA2ST_KEY_MAP',
    'Converter', 'CONVERTERS', 'detect_kind', 'convert_state',
    'convert_official', 'load_official', 'convert_official_cast',
    'load_official_cast', 'convert_official_av', 'load_official_av',
    'convert_official_msca', 'load_official_msca', 'CheckpointFitError',
    'FitReport', 'check_fit', 'fit_report', 'load_fitted', 'select_prefix',
    'strip_prefixes'
]

__all__ += ['load_timm_expert', 'read_timm_expert', 'load_videomae_v2_expert',
            'read_videomae_v2']
__all__ += ['load_official_aim', 'load_official_st_adapter', 'with_tower']
