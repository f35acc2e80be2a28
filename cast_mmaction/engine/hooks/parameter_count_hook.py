"""ParameterCountHook: trainable and total parameters when a run starts."""
from mmengine.hooks import Hook

from mmaction.registry import HOOKS


@HOOKS.register_module()
class ParameterCountHook(Hook):
    """Logs trainable and total parameter counts of the model when a run
    starts (train or test), e.g. ``trainable 45.21M of 217.23M``."""

    priority = 'VERY_LOW'

    def _log(self, runner):
        from ...utils import param_counts
        model = runner.model
        model = getattr(model, 'module', model)
        train, total = param_counts(model)
        runner.logger.info(
            f'parameters: trainable {train / 1e6:.2f}M of {total / 1e6:.2f}M'
            f' ({100.0 * train / max(total, 1):.1f}%)')

    def before_train(self, runner):
        self._log(runner)

    def before_test(self, runner):
        self._log(runner)
