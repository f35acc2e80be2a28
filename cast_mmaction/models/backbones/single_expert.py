"""What the single-expert PEFT backbones (ST-Adapter, AIM) share: one
frozen expert built from its config, sized by the backbone's clip, and the
declarations the engine reads from a backbone.

A backbone here holds its expert as ``experts.<name>`` (the layout of
``CASTBackbone``), so the checkpoint rows, the FSDP units, the stream roles
(``inference.stream_info``) and the optimizer's layer ids of the expert are
the ones every other model uses. Its own per-layer modules live in
containers ``<container>.<expert name>.<layer>`` named in
``layer_containers`` (read by ``engine/optimizers.get_layer_id``).
"""
import torch.nn as nn
from mmengine.model import BaseModule

from mmaction.registry import MODELS
from ... import safe_load
from ..experts.base import Expert


def build_frozen_expert(cfg, num_frames, img_size, trainable=(),
                        owner='backbone'):
    """Build the expert of ``cfg`` on every frame of a ``num_frames`` clip
    (``frame_start=0, frame_step=1`` unless the config sets them), freeze
    it except the parameter-name prefixes ``trainable`` and return it."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'{owner}: expert must be a config dict with a type '
                        f'(e.g. dict(type=\'CLIPViTExpert\', embed_dim=768, '
                        f'depth=12, num_heads=12)), got {cfg!r}')
    # the expert dict's trust_checkpoint (docs/security.md), for entry
    # points that did not run trust_config
    cfg = dict(safe_load.pop_trust(cfg, 'backbone.expert'))
    cfg.setdefault('frame_start', 0)
    cfg.setdefault('frame_step', 1)
    cfg.update(num_frames=num_frames, img_size=img_size, frozen=False)
    expert = MODELS.build(cfg)
    if not isinstance(expert, Expert):
        raise TypeError(f'{owner}: expert {cfg["type"]} is not an Expert '
                        f'(cast_mmaction.models.experts.Expert)')
    expert.trainable_names = tuple(trainable)
    expert.freeze()
    return expert


class SingleExpertBackbone(BaseModule):
    """Base of a backbone of one frozen expert plus trainable modules.

    Subclasses set ``layer_containers`` (their per-layer ModuleDicts of
    ModuleLists, so that the layer-wise lr decay puts their modules in the
    layer's group) and call :meth:`_set_expert`.
    """

    layer_containers = ()

    def _set_expert(self, name, expert):
        self.experts = nn.ModuleDict({name: expert})
        self.expert_name = name
        self.stream_names = (name, )
        self.embed_dim, self.depth = expert.embed_dim, expert.depth
        self.num_heads = expert.num_heads

    def expert_field(self, name):
        """The config field of the expert (error messages name it)."""
        return 'model.backbone.expert'

    @property
    def expert(self):
        return self.experts[self.expert_name]

    def _per_layer(self, make):
        """``ModuleDict({expert name: ModuleList(make(i) or Identity)})``."""
        return nn.ModuleDict({self.expert_name: nn.ModuleList(
            make(i) or nn.Identity() for i in range(self.depth))})

    def init_weights(self):
        # the expert loads its own weights (``pretrained``); the rest keep
        # the initialisation of their constructors
        self.expert.init_weights()
