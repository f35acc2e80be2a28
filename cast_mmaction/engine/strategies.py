"""Helpers for MMEngine's ``FlexibleRunner`` strategies (FSDP, DeepSpeed).

FSDP shards parameters per *wrapped unit*, gathering a unit's weights just
before its ``forward`` runs. The multi-expert backbone calls the experts in
pieces (attention branch, MLP branch) rather than through whole blocks, so
the units must be the modules whose ``forward`` is called: the experts'
attention and MLP modules and the links. Each expert class declares its
units (``Expert.fsdp_units``), and so does each link class
(``Link.fsdp_units``; by default the link itself, as the B-CA link).
``cast_fsdp_wrap_policy`` wraps exactly those (norms, adapters,
embeddings and heads stay in the root unit, which is gathered for the whole
step). Config::

    strategy = dict(
        type='FSDPStrategy',
        model_wrapper=dict(auto_wrap_policy=dict(
            type='cast_fsdp_wrap_policy', min_num_params=0)))

See ``configs/_base_/strategies/`` and ``docs/benchmarks.md``.
"""
from mmengine.registry import FUNCTIONS


def fsdp_units():
    """Module classes whose ``forward`` the backbone calls and that hold the
    bulk of the parameters: the ``fsdp_units`` every imported expert class
    declares, and those every imported link class declares."""
    from ..models.experts import Expert
    from ..models.fusion import Link
    units = []
    for cls in Expert.all_classes() + Link.all_classes():
        units.extend(u for u in cls.fsdp_units if u not in units)
    return tuple(units)


@FUNCTIONS.register_module()
def cast_fsdp_wrap_policy(module, recurse, nonwrapped_numel,
                          min_num_params=0):
    """FSDP ``auto_wrap_policy``: wrap every :func:`fsdp_units` module with
    at least ``min_num_params`` parameters not wrapped yet."""
    if recurse:
        return True
    return isinstance(module, fsdp_units()) and (
        nonwrapped_numel >= min_num_params)


__all__ = ['cast_fsdp_wrap_policy', 'fsdp_units']
