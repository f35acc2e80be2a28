"""The state-dict toolkit: every place that fits a state dict to a model
(expert loaders, official converters, ``tools/convert/convert_checkpoint.py``,
``inference.load_weights``, the start-up checkpoint check) uses these.

* :func:`strip_prefixes` / :func:`select_prefix`: key renaming of wrappers
  (``module.`` of DataParallel / DeepSpeed, ``backbone.``, ``visual.``...);
* :func:`fit_report`: which keys are missing, unexpected or of another shape
  (:class:`FitReport`), and :meth:`FitReport.message`, the one wording of
  every "does not fit" error;
* :func:`check_fit`: raise when a report breaks a policy;
* :func:`load_fitted`: check, cast to the model's dtypes and load.

Nothing here reads files (``common.read_state_dict`` does).
"""
from dataclasses import dataclass, field

import torch

MODULE_PREFIX = ('module.', )
# what an expert loader's shape mismatch most likely means
EXPERT_HINT = ('(wrong size or architecture? check the expert\'s width / '
               'depth / heads / patch size in the config)')


def strip_prefixes(state, prefixes=MODULE_PREFIX):
    """Remove the first of ``prefixes`` that starts each key (one pass, so
    ``module.backbone.x`` with ``('module.', 'backbone.')`` gives
    ``backbone.x``); keys without any of them are kept as they are."""
    prefixes = (prefixes, ) if isinstance(prefixes, str) else tuple(prefixes)
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def select_prefix(state, prefix):
    """The entries under ``prefix`` with the prefix removed (e.g. the image
    tower ``visual.*`` of a full CLIP state dict); other keys are dropped."""
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix)}


def _shape(v):
    return tuple(v.shape)


@dataclass
class FitReport:
    """How a state dict fits a model.

    ``missing``: model keys absent from the state dict (model order);
    ``unexpected``: state-dict keys the model does not have, except those
    starting with an ``ignore_unexpected`` prefix, which are in ``ignored``;
    ``mismatched``: ``(key, state shape, model shape)`` of common keys;
    ``loadable``: common keys of equal shape.
    """
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    loadable: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def message(self, what, target='the model', hint='', limit=8,
                missing=True, unexpected=True, shapes=True):
        """``'{what} does not fit {target}:'`` then one line per kind of
        problem (only the kinds selected), then ``hint``."""
        lines = [f'{what} does not fit {target}:']
        if missing and self.missing:
            lines.append(f'{len(self.missing)} missing keys (in the model, '
                         f'not in the checkpoint), e.g. '
                         f'{self.missing[:limit]}')
        if unexpected and self.unexpected:
            lines.append(f'{len(self.unexpected)} unexpected keys (in the '
                         f'checkpoint, not in the model), e.g. '
                         f'{self.unexpected[:limit]}')
        if shapes and self.mismatched:
            eg = '; '.join(f'{k}: checkpoint {a} vs model {b}'
                           for k, a, b in self.mismatched[:limit])
            lines.append(f'{len(self.mismatched)} shape mismatches: {eg}')
        if hint:
            lines.append(hint)
        return '\n  '.join(lines)

    def summary(self, what):
        """One log line: loaded / missing / unexpected / ignored counts."""
        return (f'{what}: loaded {len(self.loadable)} tensors; missing '
                f'{len(self.missing)}{_few(self.missing)}; unexpected '
                f'{len(self.unexpected)}{_few(self.unexpected)}; ignored '
                f'{len(self.ignored)}')


def _few(keys, n=5):
    if not keys:
        return ''
    more = f', ... (+{len(keys) - n})' if len(keys) > n else ''
    return ' (' + ', '.join(keys[:n]) + more + ')'


def fit_report(model_or_state, state, ignore_unexpected=()):
    """Compare ``state`` with a module (its ``state_dict()``) or with a
    reference state dict. Shapes are compared as tuples."""
    own = model_or_state
    if isinstance(model_or_state, torch.nn.Module):
        own = model_or_state.state_dict()
    ignore = tuple(ignore_unexpected)
    rep = FitReport()
    rep.missing = [k for k in own if k not in state]
    for k, v in state.items():
        if k not in own:
            if ignore and k.startswith(ignore):
                rep.ignored.append(k)
            else:
                rep.unexpected.append(k)
        elif _shape(v) != _shape(own[k]):
            rep.mismatched.append((k, _shape(v), _shape(own[k])))
        else:
            rep.loadable.append(k)
    return rep


class CheckpointFitError(ValueError):
    """A state dict does not fit the model (message: FitReport.message)."""


def check_fit(report, what, target='the model', hint='',
              allow_missing=False, allow_unexpected=False,
              allow_shapes=False, error=CheckpointFitError):
    """Raise ``error`` with :meth:`FitReport.message` when the report has a
    problem that is not allowed. Returns the report."""
    bad = ((report.missing and not allow_missing)
           or (report.unexpected and not allow_unexpected)
           or (report.mismatched and not allow_shapes))
    if bad:
        raise error(report.message(what, target, hint))
    return report


def load_fitted(module, state, what, target='the model', hint='',
                allow_missing=False, allow_unexpected=False,
                ignore_unexpected=(), error=CheckpointFitError, log=True):
    """Check ``state`` against ``module`` (shape mismatches are always an
    error; missing / unexpected keys unless allowed), cast it to the
    module's dtypes and load the loadable keys. Logs
    :meth:`FitReport.summary` and returns the report."""
    report = fit_report(module, state, ignore_unexpected)
    check_fit(report, what, target, hint, allow_missing, allow_unexpected,
              error=error)
    own = module.state_dict()
    module.load_state_dict(
        {k: state[k].to(own[k].dtype) for k in report.loadable},
        strict=False)
    if log:
        from mmengine.logging import print_log
        print_log(report.summary(what), logger='current')
    return report


__all__ = ['strip_prefixes', 'select_prefix', 'FitReport', 'fit_report',
           'CheckpointFitError', 'check_fit', 'load_fitted']
