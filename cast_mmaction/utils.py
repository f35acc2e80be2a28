"""Small helpers for building things outside a Runner."""
from mmengine.registry import DefaultScope


def ensure_scope():
    """Make ``mmaction`` the default registry scope if none is set (the
    Runner does this from ``default_scope`` in configs)."""
    if DefaultScope.get_current_instance() is None:
        from mmengine.registry import init_default_scope
        init_default_scope('mmaction')


def build_model(cfg):
    """Build a model config dict (or mmengine Config) in the mmaction
    scope."""
    from mmaction.registry import MODELS
    ensure_scope()
    return MODELS.build(cfg)


def param_counts(model):
    """(trainable, total) parameter counts of any module."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return train, total
