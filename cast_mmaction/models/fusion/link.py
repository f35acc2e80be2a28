"""The link interface: a module that exchanges information between experts at
one layer of the multi-expert backbone.

A link *type* is a subclass of :class:`Link` registered in MMAction2's
``MODELS`` (the registry the experts and every other model piece use, so a
config's ``custom_imports`` brings a user's own link type in the same way as
a user's own expert). An entry of ``backbone.links`` names it with
``type=`` (default ``'BottleneckCrossAttention'``, the B-CA link of the
published models); the backbone builds one instance per layer the link is
active in. Each link class *declares* what the rest of the package needs to
know about it, so a new link type is one file of its own (no list elsewhere
to extend):

* its constructor arguments: ``experts`` (``{name: Expert}``, the streams it
  joins, in config order) and ``receivers`` (the streams it updates) are
  given by the backbone; every other argument is a link-specific config key
  (:meth:`config_keys`), validated here, so a misspelt key is refused naming
  the field and the keys the class takes;
* ``backbone_defaults``: ``{argument: backbone argument}``, arguments whose
  default comes from the backbone's own config (B-CA: ``down_ratio``,
  ``eps`` <- ``link_eps``);
* ``fsdp_units``: module classes whose ``forward`` the backbone calls and
  which FSDP wraps as one unit each (default: the link class itself);
* ``shareable_parts``: names of ``nn.ModuleDict`` attributes keyed by expert
  name that ``share_projections=True`` ties across the links active in the
  same layer (B-CA: ``('down', 'up')``);
* ``no_weight_decay_names``: last name components of its parameters that
  get no weight decay (besides 1-D tensors and biases);
* ``attention_weights``: True when :meth:`set_attention_sink` makes it
  report the softmax weights its forward used
  (``CASTBackbone.record_attention``).

and implements, per layer:

* ``names`` (the experts it joins) and ``receivers`` (those it updates);
* ``forward(tokens, experts, batch, time_enc=None, queries=None)`` ->
  ``{receiver: update}`` (residual updates; the backbone adds them through
  drop path). ``queries`` restricts the receivers computed (the backbone's
  ``order='sequential'``);
* ``project(tokens)`` / ``attend(downs, experts, batch, time_enc, queries)``,
  ``forward``'s two halves, and ``down`` (``{name: module}``, the projection
  ``project`` applies): what the backbone's ``'fusion'`` checkpoint policy
  splits on: it calls ``down[name]`` for every joined expert, so give each
  one a module (``nn.Identity()`` where there is no projection). The default
  ``project`` is ``down`` applied per stream, so a link implements
  ``attend`` only.
"""
import inspect

import torch.nn as nn

#: keys of a ``backbone.links`` entry the backbone reads itself
BACKBONE_LINK_KEYS = ('type', 'experts', 'layers', 'name', 'directions',
                      'order')

#: the link type of an entry without ``type``
DEFAULT_LINK_TYPE = 'BottleneckCrossAttention'


class Link(nn.Module):
    """Base class of link types (see the module docstring)."""

    backbone_defaults = {}
    shareable_parts = ()
    no_weight_decay_names = ()
    attention_weights = False
    #: the link adds the backbone's time encodings (set per instance)
    time_encoding = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if 'fsdp_units' not in cls.__dict__:
            cls.fsdp_units = (cls, )
        for part in cls.shareable_parts:
            if not isinstance(part, str):
                raise TypeError(f'{cls.__name__}.shareable_parts must name '
                                f'ModuleDict attributes, got {part!r}')

    def __init__(self, experts, receivers=None):
        super().__init__()
        names = list(experts)
        if len(names) < 2:
            raise ValueError(f'a link joins at least two experts, got '
                             f'{names}')
        self.names = names
        receivers = names if receivers is None else list(receivers)
        if not receivers or set(receivers) - set(names):
            raise ValueError(f'link {names}: receivers must be a non-empty '
                             f'subset of its experts, got {receivers}')
        self.receivers = [n for n in names if n in receivers]
        self.down = nn.ModuleDict()
        self._attention_sink = None

    # -- declarations ---------------------------------------------------
    @classmethod
    def all_classes(cls):
        """Every imported subclass of :class:`Link` (those of this package
        and those a config's ``custom_imports`` brought in)."""
        out, todo = [], list(cls.__subclasses__())
        while todo:
            c = todo.pop(0)
            if c not in out:
                out.append(c)
                todo.extend(c.__subclasses__())
        return out

    @classmethod
    def config_keys(cls):
        """The link-specific keys of a ``backbone.links`` entry: the
        constructor's arguments besides ``experts`` and ``receivers``."""
        params = inspect.signature(cls.__init__).parameters
        return tuple(k for k, p in params.items()
                     if k not in ('self', 'experts', 'receivers')
                     and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    @classmethod
    def check_config(cls, cfg, field):
        """Refuse keys of ``cfg`` (a link entry without the backbone's own
        keys) that the class does not take, naming ``field``."""
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        unknown = sorted(set(cfg) - set(cls.config_keys()))
        if unknown:
            raise ValueError(
                f'{field}: unknown keys {unknown} for link type '
                f'{cls.__name__}; known: '
                f'{sorted(set(BACKBONE_LINK_KEYS) | set(cls.config_keys()))}')

    # -- per-layer interface ----------------------------------------------
    def project(self, tokens):
        """``{name: down projection}`` of the joined streams' tokens
        (identity for a stream without a ``down`` module)."""
        return {n: self.down[n](tokens[n]) if n in self.down else tokens[n]
                for n in self.names}

    def attend(self, downs, experts, batch, time_enc=None, queries=None):
        raise NotImplementedError(
            f'{type(self).__name__} implements neither forward nor attend')

    def forward(self, tokens, experts, batch, time_enc=None, queries=None):
        return self.attend(self.project(tokens), experts, batch, time_enc,
                           queries)

    def position_tables(self):
        """``[(name relative to the link, expert name, axis)]`` of learned
        tables spanning an expert's grid (checkpoint converters resize them;
        see ``position_table_layout``). None by default."""
        return []

    # -- attention weights ----------------------------------------------
    def set_attention_sink(self, sink):
        """``sink(receiver, weights, info)`` is called with the softmax
        weights each forward uses (None: stop). Links whose class sets
        ``attention_weights = True`` call it; others ignore it."""
        self._attention_sink = sink

    def attention_windows(self):
        """``{receiver: window name}`` of the attention this link reports
        (empty when it reports none)."""
        return {}

    def report_attention(self, receiver, weights, **info):
        """For subclasses: hand ``weights`` to the sink, if one is set."""
        if self._attention_sink is not None:
            self._attention_sink(receiver, weights.detach(), info)


class AttentionRecord(dict):
    """What ``CASTBackbone.record_attention`` collects:
    ``{(layer, link name, receiver): weights}``, the softmax weights of the
    last forward inside the ``with`` block, (B, heads, windows..., Lq, Lk)
    as the link computed them (B-CA: the layout of
    :meth:`~.windows.WindowPolicy.weights_by_window`). ``info[key]`` holds
    what the link said about them (B-CA: ``source``, the stream attended
    to; ``window``; ``q_grid`` / ``kv_grid``, the (T, N) grids).
    ``silent`` lists the (layer, link name) of links that report no
    weights (their class has ``attention_weights = False``)."""

    def __init__(self):
        super().__init__()
        self.info = {}
        self.silent = []

    def sink(self, layer, link):
        def put(receiver, weights, info):
            self[layer, link, receiver] = weights
            self.info[layer, link, receiver] = dict(info)
        return put


def link_class(type_name, field):
    """The :class:`Link` subclass registered as ``type_name`` (or the class
    itself), with an error naming ``field`` and the registered link types
    otherwise."""
    from mmaction.registry import MODELS
    cls = MODELS.get(type_name) if isinstance(type_name, str) else type_name
    known = sorted(c.__name__ for c in Link.all_classes()
                   if MODELS.get(c.__name__) is c)
    if cls is None:
        raise ValueError(
            f'{field}.type={type_name!r} is not a registered link type; '
            f'registered: {known} (a link type of your own: a Link subclass '
            f'registered in mmaction.registry.MODELS, imported through the '
            f"config's custom_imports)")
    if not (isinstance(cls, type) and issubclass(cls, Link)):
        raise ValueError(
            f'{field}.type={type_name!r} is {cls!r}, not a subclass of '
            f'cast_mmaction.models.fusion.Link; link types: {known}')
    return cls


__all__ = ['Link', 'AttentionRecord', 'link_class', 'BACKBONE_LINK_KEYS',
           'DEFAULT_LINK_TYPE']
