"""Layer-wise learning-rate decay for multi-expert backbones (CAST recipe).

The published CAST fine-tuning gives every trainable parameter a *layer id*
and scales its learning rate by ``decay ** (depth + 1 - id)``:

* id ``0``: the experts' embeddings, as each expert class declares them
  (``Expert.embedding_names``: CLIP ``conv1``, ``class_embedding``,
  ``positional_embedding``, ``ln_pre``; VideoMAE ``patch_embed``; AST
  ``patch_embed``, ``cls_token``, ``dist_token``, ``pos_embed``);
* id ``i + 1``: everything of layer ``i``: the experts' blocks
  (``experts.*.transformer.resblocks.i``, ``experts.*.blocks.i``), the
  adapters ``attn_adapters.*.i`` / ``mlp_adapters.*.i``, the B-CA links
  ``links.*.i`` and the per-layer containers a backbone declares in
  ``layer_containers`` (ST-Adapter ``pre_attn_adapters.clip.i``, AIM
  ``t_adapters.clip.i``, ...);
* id ``depth + 1``: the rest (CLIP ``ln_post``, VideoMAE ``fc_norm``, the
  heads, time-encoding MLPs, ...): full learning rate.

Weight decay is 0 for 1-D parameters, biases, the B-CA position tables
(``q_pos``, ``kv_pos``, ``q_pos_t``, ``kv_pos_t``: the tables of the
registered window policies, ``models/fusion/windows.py``) and the names
expert and link classes declare (``Expert.no_weight_decay_names``: AST
``pos_embed``; ``Link.no_weight_decay_names``), as the authors'
``no_weight_decay`` list. Parameters with ``requires_grad=False`` (the frozen experts) get no param group at all, so
the optimizer keeps state only for what trains.

Config::

    optim_wrapper = dict(
        type='AmpOptimWrapper',
        optimizer=dict(type='AdamW', lr=1.5e-3, betas=(0.9, 0.999),
                       weight_decay=0.05),
        constructor='CASTLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.75))

``paramwise_cfg`` keys: ``layer_decay_rate`` (0.75; 1.0 turns the decay
off), ``num_layers`` (default ``model.backbone.depth``), ``no_decay_names``
(last name components without weight decay, added to the defaults),
``embed_names`` (first name components of an expert that count as its
embeddings, added to the expert's own ``embedding_names``).

An expert may define ``get_layer_id(name, depth)`` (``name`` relative to the
expert) to override the rules above.
"""
import re
from collections import OrderedDict

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mmaction.registry import OPTIM_WRAPPER_CONSTRUCTORS

# backbone containers indexed <container>.<stream or link name>.<layer>
LAYER_CONTAINERS = ('attn_adapters', 'mlp_adapters', 'links')
_BLOCK_RE = re.compile(r'(?:^|\.)(?:resblocks|blocks|layers)\.(\d+)(?:\.|$)')


def _backbone_of(model):
    return getattr(model, 'backbone', model)


def _expert_classes():
    from ..models.experts import Expert
    return Expert.all_classes()


def expert_embedding_names(expert=None):
    """First name components of ``expert``'s embeddings (its class's
    ``embedding_names``); without an expert, those of every expert class."""
    if expert is not None:
        return tuple(getattr(expert, 'embedding_names', ()))
    names = []
    for cls in _expert_classes():
        names.extend(n for n in cls.embedding_names if n not in names)
    return tuple(names)


def default_no_decay_names():
    """The window policies' position tables and every expert and link
    class's ``no_weight_decay_names``."""
    from ..models.fusion import Link, position_table_names
    names = list(position_table_names())
    for cls in _expert_classes() + Link.all_classes():
        names.extend(n for n in cls.no_weight_decay_names if n not in names)
    return tuple(names)


def get_layer_id(name, depth, backbone=None, embed_names=(),
                 backbone_prefix='backbone.'):
    """Layer id (0 .. depth + 1) of parameter ``name`` of a recognizer whose
    backbone is a multi-expert backbone of ``depth`` layers. ``embed_names``
    are added to the expert's own ``embedding_names``."""
    rest_id = depth + 1
    if not name.startswith(backbone_prefix):
        return rest_id  # heads, necks
    sub = name[len(backbone_prefix):]
    parts = sub.split('.')
    if parts[0] == 'experts' and len(parts) > 2:
        expert_name, local = parts[1], '.'.join(parts[2:])
        expert = None
        if backbone is not None and hasattr(backbone, 'experts'):
            expert = backbone.experts[expert_name]
        if expert is not None and hasattr(expert, 'get_layer_id'):
            return int(expert.get_layer_id(local, depth))
        if parts[2] in expert_embedding_names(expert) + tuple(embed_names):
            return 0
        m = _BLOCK_RE.search(local)
        if m:
            i = int(m.group(1))
            if not 0 <= i < depth:
                raise ValueError(
                    f'parameter {name}: block {i} is outside the '
                    f'{depth} layers of the backbone (set '
                    f'optim_wrapper.paramwise_cfg.num_layers)')
            return i + 1
        return rest_id
    containers = LAYER_CONTAINERS + tuple(
        getattr(backbone, 'layer_containers', ()))
    if parts[0] in containers and len(parts) > 3 and parts[2].isdigit():
        i = int(parts[2])
        if not 0 <= i < depth:
            raise ValueError(f'parameter {name}: layer {i} is outside the '
                             f'{depth} layers of the backbone')
        return i + 1
    return rest_id


def skips_weight_decay(name, param, no_decay_names=None):
    if no_decay_names is None:
        no_decay_names = default_no_decay_names()
    return (param.ndim <= 1 or name.endswith('.bias')
            or name.rsplit('.', 1)[-1] in no_decay_names)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class CASTLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Param groups by (layer id, weight decay or not) with
    ``lr = base_lr * layer_decay_rate ** (depth + 1 - layer_id)``; frozen
    parameters are left out. Each group also carries ``layer_id``,
    ``lr_scale`` and ``group_name`` (``layer_{id}_{decay|no_decay}``).
    Groups are ordered from the last layer to the embeddings, so the first
    group (whose lr MMEngine logs) has the base lr."""

    _KEYS = {'layer_decay_rate', 'num_layers', 'no_decay_names',
             'embed_names'}

    def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg=None)
        cfg = dict(paramwise_cfg or {})
        unknown = set(cfg) - self._KEYS
        if unknown:
            raise ValueError(
                f'optim_wrapper.paramwise_cfg: unknown keys {sorted(unknown)}'
                f' for CASTLayerDecayOptimWrapperConstructor; known: '
                f'{sorted(self._KEYS)}')
        self.layer_decay_rate = float(cfg.get('layer_decay_rate', 0.75))
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'optim_wrapper.paramwise_cfg.layer_decay_rate='
                             f'{self.layer_decay_rate}: use a value in (0, 1]')
        self.num_layers = cfg.get('num_layers')
        self.no_decay_names = default_no_decay_names() + tuple(
            cfg.get('no_decay_names', ()))
        self.embed_names = tuple(cfg.get('embed_names', ()))
        if self.base_lr is None:
            raise ValueError('optim_wrapper.optimizer.lr is required by the '
                             'layer-wise lr decay')
        self.paramwise_cfg = cfg

    def _depth(self, model):
        if self.num_layers is not None:
            return int(self.num_layers)
        depth = getattr(_backbone_of(model), 'depth', None)
        if not isinstance(depth, int):
            raise ValueError(
                'CASTLayerDecayOptimWrapperConstructor needs the backbone '
                'depth: model.backbone.depth (a CASTBackbone) is missing; '
                'set optim_wrapper.paramwise_cfg.num_layers')
        return depth

    def param_groups(self, model):
        """The param groups (list of dicts) for ``model``."""
        if hasattr(model, 'module'):
            model = model.module
        depth = self._depth(model)
        backbone = _backbone_of(model)
        groups = OrderedDict()
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue  # frozen: no group, no optimizer state
            layer_id = get_layer_id(name, depth, backbone, self.embed_names)
            no_decay = skips_weight_decay(name, param, self.no_decay_names)
            key = (layer_id, no_decay)
            if key not in groups:
                scale = self.layer_decay_rate**(depth + 1 - layer_id)
                group = dict(params=[], lr=self.base_lr * scale,
                             lr_scale=scale, layer_id=layer_id,
                             group_name=f'layer_{layer_id}_'
                             f'{"no_decay" if no_decay else "decay"}')
                if no_decay:
                    group['weight_decay'] = 0.0
                elif self.base_wd is not None:
                    group['weight_decay'] = self.base_wd
                groups[key] = group
            groups[key]['params'].append(param)
        if not groups:
            raise ValueError('the model has no trainable parameter '
                             '(requires_grad=True); nothing to optimise')
        ordered = [groups[k] for k in sorted(groups, key=lambda k: (-k[0],
                                                                     k[1]))]
        return ordered

    def __call__(self, model: nn.Module):
        from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
        groups = self.param_groups(model)
        logger = MMLogger.get_current_instance()
        lines = [f'{g["group_name"]}: {sum(p.numel() for p in g["params"])} '
                 f'params, lr_scale {g["lr_scale"]:.4g}, weight_decay '
                 f'{g.get("weight_decay", "default")}' for g in groups]
        logger.info('layer-wise lr decay %s over %d groups:\n  %s',
                    self.layer_decay_rate, len(groups), '\n  '.join(lines))
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg['params'] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg,
                                    default_args=dict(optimizer=optimizer))
