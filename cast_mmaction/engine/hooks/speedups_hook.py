"""SpeedupsHook: which CPU speed-ups run, and why, logged once and written
into every checkpoint."""
from mmengine.hooks import Hook

from mmaction.registry import HOOKS


def _backbone_speedups(model):
    model = getattr(model, 'module', model)  # DDP / FSDP wrappers
    bb = getattr(model, 'backbone', None)
    return getattr(bb, 'speedups', None)


def run_facts(runner):
    """(device, dtype, autocast) of the run: the model's parameters and the
    optimizer wrapper (an ``AmpOptimWrapper`` runs under autocast)."""
    import torch
    from mmengine.optim import AmpOptimWrapper
    model = getattr(runner.model, 'module', runner.model)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device('cpu')
    ow = getattr(runner, 'optim_wrapper', None)
    autocast = isinstance(ow, AmpOptimWrapper)
    return device, torch.float32, autocast


@HOOKS.register_module()
class SpeedupsHook(Hook):
    """Logs, once when a run starts, which of the model's CPU speed-ups
    (``model.backbone.speedups``, models/speedups.py) run on this run's
    device / dtype / autocast and why (the config, the CPU's facts), with
    the torch thread count; writes the same into every checkpoint's
    ``meta['speedups']``. The decisions come from facts, never from a
    timing, so two runs of a config on one machine take the same numeric
    path."""

    priority = 'VERY_LOW'

    def __init__(self):
        self._logged = False

    def _meta(self, runner):
        import torch
        sp = _backbone_speedups(runner.model)
        if sp is None:
            return None
        meta = sp.meta(*run_facts(runner))
        meta['torch_threads'] = torch.get_num_threads()
        return meta

    def _log(self, runner):
        if self._logged:
            return
        self._logged = True
        import torch
        sp = _backbone_speedups(runner.model)
        if sp is None:
            runner.logger.info('speedups: none (the model has no '
                               'CASTBackbone)')
            return
        device, dtype, autocast = run_facts(runner)
        rows = sp.decide(device, dtype, autocast)
        on = [k for k, (run, _) in rows.items() if run]
        runner.logger.info(
            f'speedups: {", ".join(on) or "none"} on {device.type} '
            f'({str(dtype)[6:]}{", autocast" if autocast else ""}, '
            f'{torch.get_num_threads()} torch threads); config '
            f'model.backbone.speedups={sp.requested!r}\n'
            + sp.summary(device, dtype, autocast))

    def before_train(self, runner):
        self._log(runner)

    def before_val(self, runner):
        self._log(runner)

    def before_test(self, runner):
        self._log(runner)

    def before_save_checkpoint(self, runner, checkpoint):
        meta = self._meta(runner)
        if meta is not None:
            checkpoint.setdefault('meta', {})['speedups'] = meta
