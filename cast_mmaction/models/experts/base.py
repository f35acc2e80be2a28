"""The expert interface: a pretrained transformer over its own token grid.

The multi-expert backbone (``backbones/cast.py``) runs several experts layer by
layer in lock-step. For that each expert exposes its layer in pieces (attention
branch, MLP branch) instead of a monolithic block, and describes how its token
sequence maps onto a ``(T, N)`` grid of patch tokens plus prefix tokens, which
is all a bottleneck cross-attention link needs to know about it.

Token layouts (``x`` below) are the expert's own; ``split``/``merge`` convert
any per-token tensor of that layout (any channel width) to and from
``prefix, grid`` with ``grid`` shaped ``(B, T, N, C)``.
"""
import torch
import torch.nn as nn
from mmengine.model import BaseModule


ROLES = ('image', 'video', 'audio')
#: the inputs the multi-expert backbone hands an expert (the keys of its dict
#: input; a plain tensor input is the video); an expert's ``modality`` is one
MODALITIES = ('video', 'audio')


class Expert(BaseModule):
    """Base class of experts.

    Instances set ``embed_dim``, ``depth``, ``num_heads`` (the one size
    vocabulary of every expert), ``grid_t`` and ``grid_n``, and implement the
    methods below. Each expert class *declares* what the rest of the package
    needs to know about it, so that adding an expert is writing its own file
    (no list elsewhere to extend):

    * ``modality``: the input it reads, one of :data:`MODALITIES`
      (``'video'`` or ``'audio'``: the key of a dict input; the backbone
      refuses any other value when it is built, :func:`check_expert_modality`);
    * ``role``: what it models, one of :data:`ROLES` (``'image'``: a
      frame-wise image model such as CLIP, the *spatial* stream;
      ``'video'``: a space-time model such as VideoMAE, the *temporal*
      stream; ``'audio'``). ``inference.stream_info`` names the pooled
      streams by it;
    * ``fsdp_units``: the module classes whose ``forward`` the backbone calls
      (attention and MLP modules); ``engine.strategies`` wraps each instance
      as one FSDP unit;
    * ``embedding_names``: first name components (relative to the expert) of
      its embedding parameters, layer id 0 of the layer-wise lr decay
      (``engine.optimizers``);
    * ``no_weight_decay_names``: last name components of parameters without
      weight decay (besides 1-D tensors and biases, which never get it);
    * ``trainable_names``: parameter-name prefixes that stay trainable when
      the expert is frozen;
    * ``branch_modules``: ``{'attn': names, 'mlp': names}``, the modules of
      one layer (:meth:`layer_module`) that make its attention / MLP branch,
      removed where the backbone switches that branch off
      (:meth:`remove_branch`; ablations of late fusion).
    """

    modality = 'video'
    role = None
    fsdp_units = ()
    embedding_names = ()
    no_weight_decay_names = ()
    trainable_names = ()
    branch_modules = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.role is not None and cls.role not in ROLES:
            raise TypeError(f'{cls.__name__}.role={cls.role!r}: use one of '
                            f'{ROLES}')

    @classmethod
    def all_classes(cls):
        """Every imported subclass of :class:`Expert` (the experts of this
        package and those a config's ``custom_imports`` brought in)."""
        out, todo = [], list(cls.__subclasses__())
        while todo:
            c = todo.pop(0)
            if c not in out:
                out.append(c)
                todo.extend(c.__subclasses__())
        return out

    # -- input and output -------------------------------------------------
    def embed(self, inputs):
        """Modality input -> tokens in the expert's layout."""
        raise NotImplementedError

    def pool(self, x, batch):
        """Tokens -> pooled feature (B, C)."""
        raise NotImplementedError

    def embed_tokens(self, inputs):
        """Optional: :meth:`embed` before its final normalisation, so that a
        backbone can add embeddings of its own (AIM's temporal embedding);
        ``embed(x) == embed_norm(embed_tokens(x))``."""
        raise NotImplementedError(
            f'{type(self).__name__} does not expose embed_tokens / '
            f'embed_norm')

    def embed_norm(self, x):
        raise NotImplementedError(
            f'{type(self).__name__} does not expose embed_tokens / '
            f'embed_norm')

    def frame_features(self, x, batch):
        """Optional: one pooled feature per time step, (B, T, C) (AIM's
        I3D-style head averages them)."""
        raise NotImplementedError(
            f'{type(self).__name__} does not expose frame_features')

    # -- one layer, in pieces --------------------------------------------
    def attn_branch(self, i, x):
        """Output of layer ``i``'s attention branch (before the residual)."""
        raise NotImplementedError

    def attn_norm(self, i, x):
        """Optional: the attention branch in two pieces,
        ``attn_branch(i, x) == attn_core(i, attn_norm(i, x))``, so that a
        backbone can run the layer's attention on other token groups
        (AIM's temporal attention) or put an adapter between them."""
        raise NotImplementedError(
            f'{type(self).__name__} does not expose attn_norm / attn_core')

    def attn_core(self, i, xn):
        raise NotImplementedError(
            f'{type(self).__name__} does not expose attn_norm / attn_core')

    def mlp_norm(self, i, x):
        raise NotImplementedError

    def mlp_branch(self, i, xn):
        raise NotImplementedError

    def mlp_module(self, i):
        """The module ``m`` of layer ``i`` with ``mlp_branch(i, xn) ==
        m(xn)``, or None where the branch does more (a layer scale, a drop
        path) or an expert does not say: what :meth:`mlp_adder` asks."""
        return None

    def mlp_adder(self, i, xn):
        """``f(residual) -> residual + mlp_branch(i, xn)`` computed in fewer
        passes, or None (the caller adds): where layer ``i``'s MLP module
        says it accumulates its output into a residual for ``xn`` (the
        frozen MLP speed-up, ``models/speedups.py``), a call of that module
        (an FSDP wrapper around it included, whose hooks then run) with
        ``residual=``."""
        m = self.mlp_module(i)
        adds_into = getattr(m, 'adds_into', None)
        if adds_into is None or not adds_into(xn):
            return None
        return lambda residual: m(xn, residual=residual)

    # -- per-layer switches (backbone ablations) ----------------------------
    def layer_module(self, i):
        """The module holding layer ``i``'s parameters."""
        raise NotImplementedError(
            f'{type(self).__name__} does not expose its layers '
            f'(layer_module); it cannot have fresh layers or branch switches')

    def remove_branch(self, i, branch):
        """Delete layer ``i``'s ``branch`` (``'attn'`` or ``'mlp'``): the
        backbone does not run it and its parameters leave the state dict."""
        names = self.branch_modules.get(branch)
        if not names:
            raise NotImplementedError(
                f'{type(self).__name__} declares no {branch!r} modules in '
                f'branch_modules; it cannot switch that branch off')
        blk = self.layer_module(i)
        for n in names:
            setattr(blk, n, None)

    def unfreeze_layers(self, layers):
        """Make every parameter of ``layers`` trainable (layers beyond the
        pretrained depth: initialised fresh and trained)."""
        for i in layers:
            for p in self.layer_module(i).parameters():
                p.requires_grad_(True)

    # -- token layout -----------------------------------------------------
    def split(self, x, batch):
        """Tokens -> (prefix or None, grid (B, T, N, C))."""
        raise NotImplementedError

    def merge(self, prefix, grid, batch):
        """Inverse of :meth:`split`."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------
    @property
    def token_grid(self):
        return self.grid_t, self.grid_n

    def freeze(self):
        """Freeze every parameter except those under ``trainable_names``."""
        for name, p in self.named_parameters():
            p.requires_grad_(any(name == t or name.startswith(t + '.')
                                 for t in self.trainable_names))

    def cast_frozen(self, dtype):
        """Store every frozen parameter except those of normalisation layers
        in ``dtype`` (the backbone's ``frozen_dtype``): the matmul weights
        and biases, patch embeddings and position tables, which autocast
        would cast to ``dtype`` on every use anyway. Norm weights stay in
        full precision (autocast runs norms in fp32)."""
        norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d,
                 nn.BatchNorm3d)
        for mod in self.modules():
            if isinstance(mod, norms):
                continue
            for name, p in mod.named_parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point():
                    p.data = p.data.to(dtype)

    def forward_plain(self, inputs):
        """The plain expert (no adapters, no fusion): pooled feature."""
        x = self.embed(inputs)
        batch = inputs.shape[0]
        for i in range(self.depth):
            x = x + self.attn_branch(i, x)
            x = x + self.mlp_branch(i, self.mlp_norm(i, x))
        return self.pool(x, batch)

    def forward(self, inputs):
        return self.forward_plain(inputs)


RENAMED = dict(width='embed_dim', layers='depth', heads='num_heads')


#: the methods every expert implements (the backbone and the links call
#: them); the optional finer pieces (embed_tokens, attn_norm, ...) are not
#: required
INTERFACE = ('embed', 'attn_branch', 'mlp_norm', 'mlp_branch', 'pool',
             'split', 'merge')


def expert_class(type_name, field):
    """The class registered as ``type_name`` (or the class itself), checked
    before it is built: an error naming ``field`` and the registered experts
    when it is not registered, and, for an :class:`Expert` subclass, the
    interface methods (:data:`INTERFACE`) it leaves unimplemented (they would
    raise a bare NotImplementedError in the first forward). A class that is
    no Expert is left to :func:`check_expert_sizes` (a parameter-free
    stand-in with an expert's sizes builds the fusion modules around it)."""
    from mmaction.registry import MODELS
    cls = MODELS.get(type_name) if isinstance(type_name, str) else type_name
    if cls is None:
        known = sorted(c.__name__ for c in Expert.all_classes()
                       if MODELS.get(c.__name__) is c)
        raise ValueError(
            f'{field}.type={type_name!r} is not a registered expert; '
            f'registered: {known} (an expert of your own: an Expert subclass '
            f'registered in mmaction.registry.MODELS, imported through the '
            f"config's custom_imports)")
    if isinstance(cls, type) and issubclass(cls, Expert):
        missing = [m for m in INTERFACE
                   if getattr(cls, m) is getattr(Expert, m)]
        if missing:
            raise ValueError(
                f'{field}.type={type_name!r}: {cls.__name__} does not '
                f'implement {missing} of the Expert interface (every expert '
                f'implements {list(INTERFACE)}; docs/architecture.md, '
                f'Extension points)')
    return cls


def not_an_expert(cls):
    """`` (X is not an Expert ...)`` for a class that is no :class:`Expert`
    subclass, appended to the errors of building or checking it; '' for an
    Expert."""
    if isinstance(cls, type) and issubclass(cls, Expert):
        return ''
    return (f' ({getattr(cls, "__name__", cls)} is not a subclass of '
            f'cast_mmaction.models.experts.Expert, which every expert '
            f'subclasses)')


#: the sizes every built expert sets (the backbone, links and adapters
#: read them)
SIZES = ('embed_dim', 'depth', 'num_heads', 'grid_t', 'grid_n')


def check_expert_sizes(expert, field):
    """Refuse a built expert that does not set the attributes of
    :data:`SIZES`, naming them (else the first reader fails with an
    AttributeError about another name, e.g. ``token_grid``)."""
    missing = [a for a in SIZES if not hasattr(expert, a)]
    if missing:
        raise ValueError(
            f'{field}: {type(expert).__name__} does not set {missing}; '
            f'every expert sets {list(SIZES)} in its __init__ (grid_t x '
            f'grid_n: its patch grid, time steps x patches per step)'
            f'{not_an_expert(type(expert))}')


def check_expert_modality(expert, field):
    """Refuse a built expert whose ``modality`` is none of
    :data:`MODALITIES`, naming the entry and the allowed values: the
    backbone picks each expert's input by it (a dict input's key) and
    chooses the time encoding by it, so another value fails in the first
    forward with a KeyError, or reads the wrong input. A stand-in that is no
    :class:`Expert` and declares no ``modality`` is left alone."""
    if not hasattr(expert, 'modality') and not isinstance(expert, Expert):
        return
    modality = getattr(expert, 'modality', None)
    if modality not in MODALITIES:
        raise ValueError(
            f'{field}: {type(expert).__name__}.modality={modality!r} is not '
            f'an input the backbone reads; set it to one of '
            f'{list(MODALITIES)} (the key of the model\'s dict input)')


def reject_renamed(owner, **given):
    """Refuse the retired size names (``width`` / ``layers`` / ``heads``):
    every expert is sized by ``embed_dim`` / ``depth`` / ``num_heads``."""
    used = {k: v for k, v in given.items() if v is not None}
    if used:
        fix = ', '.join(f'{RENAMED[k]}={v!r}' for k, v in used.items())
        raise TypeError(
            f'{owner}: {", ".join(sorted(used))} renamed: every expert is '
            f'sized by embed_dim / depth / num_heads; write {fix} instead')


def check_frames(num_frames, start, step, field):
    idx = list(range(start, num_frames, step))
    if not idx:
        raise ValueError(
            f'{field}: no frame selected from num_frames={num_frames} with '
            f'frame_start={start}, frame_step={step}')
    return len(idx)


__all__ = ['Expert', 'ROLES', 'MODALITIES', 'check_frames', 'reject_renamed',
           'torch']
