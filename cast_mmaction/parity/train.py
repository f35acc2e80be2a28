"""Training-path parity with the authors' code (training dumps).

A training dump (``meta.train_mode``; format in the fixtures README,
"Training dumps") holds the authors' loss, gradients, trainable set,
optimizer groups and lr schedule for one training step of their CAST model.
:func:`check_train_dump` reproduces each with the recipe the user trains with
(``configs/cast_ssv2.py`` for single-label dumps, ``configs/cast_ek100.py``
for verb/noun dumps, or ``config=``) at the dump's sizes and returns rows
``(name, value, tolerance, ok)``:

* ``loss``: |ours - expected| vs ``tol x max(1, |expected|)``;
* ``trainable set``: number of names that differ (ours mapped to the authors'
  names through the converter's key table), tolerance 0; each differing name
  gets a row of its own;
* ``grad``: the worst ``||g - g_ref|| / (||g_ref|| + 1e-8 / tol)`` over the
  trainable tensors (``<= tol`` is exactly ``||g - g_ref|| <= tol ||g_ref||
  + 1e-8``); each failing tensor gets a row;
* ``lr_scale`` / ``weight_decay``: worst |ours - expected| over the trainable
  tensors, tolerance 1e-9;
* ``lr_schedule``: worst |lr - expected| over the iterations of the recipe's
  ``param_scheduler``, tolerance ``1e-6 x base lr``.

The backward runs the production training path: the recipe's model in train
mode, grad enabled, fp32 on CPU, ``model(inputs, data_samples,
mode='loss')`` + ``parse_losses`` + ``optim_wrapper.backward`` as in a
``Runner`` step (``OptimWrapper.update_params`` without ``step``), with the recipe's CPU
speed-ups (``model.backbone.speedups``, or ``speedups=``: the oneDNN
``_Linear`` and frozen-MLP autograd nodes are counted in the
``backward nodes`` row) or without them (``speedups='none'``).
The dump's input is already normalised, so the data preprocessor (normalise,
Mixup) is not run; the loss is not divided by ``accumulative_counts`` (the
dump's loss is not divided by ``update_freq`` either).
"""
import copy
import json
import os
import warnings

import torch

from ..safe_load import load_checkpoint  # weights_only + allow-list

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RECIPES = dict(single=os.path.join(_REPO, 'configs', 'cast_ssv2.py'),
               composition=os.path.join(_REPO, 'configs', 'cast_ek100.py'))
GRAD_ABS = 1e-8  # the absolute term of the gradient criterion
GROUP_TOL = 1e-9
SCHEDULE_TOL = 1e-6  # x base lr


def is_train_dump(dump_dir):
    """Whether ``dump_dir/meta.json`` describes a training dump."""
    path = os.path.join(dump_dir, 'meta.json')
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return bool(json.load(f).get('train_mode'))


def _recipe(meta, config):
    from mmengine.config import Config
    path = config or RECIPES['composition' if meta['composition']
                             else 'single']
    return path, Config.fromfile(path)


def _dump_optimizer(cfg, meta):
    """The recipe's optimizer with the dump's layer decay and weight decay
    (``meta['optimizer']``), as the schedule takes the dump's values
    (:func:`scheduled_lrs`): without ``--config`` the dump says what to
    build. With ``--config`` the config's own values are compared."""
    opt = meta.get('optimizer') or {}
    if 'weight_decay' in opt:
        cfg.optim_wrapper.optimizer.weight_decay = float(opt['weight_decay'])
    if 'layer_decay' in opt:
        cfg.optim_wrapper.setdefault('paramwise_cfg', {})
        cfg.optim_wrapper.paramwise_cfg.layer_decay_rate = float(
            opt['layer_decay'])


def build_train_model(meta, dump_dir, cfg, speedups=None):
    """The recipe's model at the dump's sizes with the dump's official
    checkpoint, in train mode (drop path 0 as in the dump); ``speedups``
    replaces the recipe's ``model.backbone.speedups`` (``'none'``: the
    reference model)."""
    from ..checkpoints import load_official_cast
    from .cast import cast_sizes_from_meta
    from ..utils import build_model

    if meta.get('drop_path_rate', 0.0) != 0.0:
        raise ValueError(f'training dumps are compared at drop_path_rate 0; '
                         f'this one has {meta["drop_path_rate"]}')
    model_cfg = cast_sizes_from_meta(cfg.model.to_dict(), meta)
    if speedups is not None:
        model_cfg['backbone']['speedups'] = (None if speedups == 'none'
                                             else speedups)
    model = build_model(model_cfg)
    load_official_cast(model, os.path.join(dump_dir,
                                           'official_checkpoint.pth'))
    return model.train()


def build_optim_wrapper_cpu(model, cfg):
    """The recipe's ``optim_wrapper`` built as the Runner does; an
    ``(Guarded)AmpOptimWrapper`` (CUDA only) becomes its full-precision
    wrapper, which
    changes neither the param groups nor the accumulation."""
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper
    from ..engine.guarded_optim_wrapper import without_amp
    ow = cfg.optim_wrapper.to_dict()
    if not torch.cuda.is_available():
        ow = without_amp(ow)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # the constructor's group table: not here
    try:
        return build_optim_wrapper(model, ow)
    finally:
        logger.setLevel(level)


def official_names(dump_dir, model):
    """Our parameter name -> the authors' name, through the converter's key
    table applied to the official checkpoint's keys."""
    from ..checkpoints.common import read_state_dict
    from ..checkpoints.key_rows import map_keys
    from ..checkpoints.registry import CAST
    from ..checkpoints.state_dict import strip_prefixes
    state = strip_prefixes(read_state_dict(
        os.path.join(dump_dir, 'official_checkpoint.pth'),
        'official CAST checkpoint'))
    table = CAST.table(state)
    ours = {}
    for k in state:  # key by key, so that each of ours knows its source
        for new in map_keys({k: None}, table)[0]:
            ours.setdefault(new, k)
    names = dict(model.named_parameters())
    return {n: ours.get(n) for n in names}


def _data_samples(meta, inputs):
    from mmaction.structures import ActionDataSample
    batch = inputs['video'].shape[0]
    samples = []
    for i in range(batch):
        ds = ActionDataSample()
        if meta['composition']:
            # 0-d long tensors, as PackEpicInputs packs them
            ds.set_field(inputs['verb'][i].reshape(()).long(), 'gt_verb')
            ds.set_field(inputs['noun'][i].reshape(()).long(), 'gt_noun')
        else:
            ds.set_gt_label(inputs['label'][i].reshape(1).long())
        samples.append(ds)
    return samples


def training_step_grads(model, optim_wrapper, meta, inputs):
    """One training forward/backward as a Runner step: returns (loss,
    {our name: grad or None}, {custom autograd node: count})."""
    video = inputs['video'].float()[:, None]  # (B, num_clips=1, C, T, H, W)
    samples = _data_samples(meta, inputs)
    optim_wrapper.zero_grad()
    with torch.enable_grad(), optim_wrapper.optim_context(model):
        losses = model(video, samples, mode='loss')
        loss, _ = model.parse_losses(losses)
    nodes = autograd_node_counts(loss)
    optim_wrapper.backward(loss)
    grads = {n: (None if p.grad is None else p.grad.detach().clone())
             for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, nodes


def autograd_node_counts(loss, names=('_LinearBackward',
                                      '_FrozenMLPBackward')):
    """How many nodes of each custom autograd Function the backward of
    ``loss`` runs (shows the fast paths are on the training path)."""
    counts = dict.fromkeys(names, 0)
    seen, stack = set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        name = type(fn).__name__
        if name in counts:
            counts[name] += 1
        stack.extend(f for f, _ in fn.next_functions)
    return counts


def scheduled_lrs(cfg, meta, model):
    """Step the recipe's param_scheduler per iteration with the dump's
    settings; compare every optimizer step's lr (per group, divided by the
    group's lr_scale) with ``lr_schedule``."""
    from mmaction.registry import PARAM_SCHEDULERS
    s = meta['lr_schedule']
    sched = cfg.param_scheduler
    if isinstance(sched, (list, tuple)):
        if len(sched) != 1:
            raise ValueError(
                f'the recipe has {len(sched)} param schedulers; the authors\''
                f' schedule is one LinearWarmupCosineLR')
        sched = sched[0]
    sched = copy.deepcopy(dict(sched))
    if sched.get('type') != 'LinearWarmupCosineLR':
        raise ValueError(f'the recipe\'s param_scheduler is '
                         f'{sched.get("type")}, not LinearWarmupCosineLR')
    base, low = float(s['base_lr']), float(s['min_lr'])
    sched.update(warmup_epochs=s['warmup_epochs'], begin=0, end=s['epochs'],
                 start_factor=float(s.get('start_warmup_value', 0.0)) / base,
                 eta_min_ratio=low / base)
    ocfg = copy.deepcopy(cfg)
    ocfg.optim_wrapper.optimizer.lr = base
    ow = build_optim_wrapper_cpu(model, ocfg)
    accum = getattr(ow, '_accumulative_counts', 1)
    per_epoch = int(s['iters_per_epoch'])
    default_args = dict(optimizer=ow)
    if sched.get('convert_to_iter_based'):
        default_args['epoch_length'] = per_epoch * accum
    scheduler = PARAM_SCHEDULERS.build(sched, default_args=default_args)
    groups = ow.optimizer.param_groups
    scales = [g['initial_lr'] / base for g in groups]
    got = []
    n_iter = s['epochs'] * per_epoch * accum
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # scheduler.step before optimizer
        for i in range(n_iter):
            if (i + 1) % accum == 0:  # an optimizer step uses this lr
                got.append([g['lr'] / sc for g, sc in zip(groups, scales)])
            scheduler.step()
    return torch.tensor(got, dtype=torch.float64)


def check_train_dump(dump_dir, tol=1e-4, config=None, speedups=None):
    """Rows (name, value, tolerance, ok); see the module docstring.
    ``speedups``: see :func:`build_train_model` (None: the recipe's)."""
    with open(os.path.join(dump_dir, 'meta.json')) as f:
        meta = json.load(f)
    if not meta.get('train_mode'):
        raise ValueError(f'{dump_dir}: meta.train_mode is not set; not a '
                         f'training dump')
    _, cfg = _recipe(meta, config)
    if config is None:
        _dump_optimizer(cfg, meta)
    torch.manual_seed(0)
    model = build_train_model(meta, dump_dir, cfg, speedups)
    inputs = load_checkpoint(os.path.join(dump_dir, 'input.pt'))
    expected = load_checkpoint(os.path.join(dump_dir, 'expected.pt'))
    rows = []

    # trainable set
    to_official = official_names(dump_dir, model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    unmapped = [n for n in trainable if to_official[n] is None]
    ours = {to_official[n]: n for n in trainable if to_official[n]}
    ref_names = set(expected['grad'])
    missing = sorted(ref_names - set(ours))
    extra = sorted(set(ours) - ref_names)
    n_bad = len(missing) + len(extra) + len(unmapped)
    rows.append(('trainable set', float(n_bad), 0.0, n_bad == 0))
    rows += [(f'  not trainable: {n}', float('nan'), 0.0, False)
             for n in missing]
    rows += [(f'  trainable, not theirs: {n}', float('nan'), 0.0, False)
             for n in extra]
    rows += [(f'  trainable, no official name: {n}', float('nan'), 0.0,
              False) for n in unmapped]

    # loss and gradients through the production training path
    ow = build_optim_wrapper_cpu(model, cfg)
    loss, grads, nodes = training_step_grads(model, ow, meta, inputs)
    ref_loss = float(expected['loss'])
    diff = abs(float(loss) - ref_loss)
    ltol = tol * max(1.0, abs(ref_loss))
    rows.append(('loss', diff, ltol, diff <= ltol))
    worst, worst_name, bad = 0.0, '', []
    for off, ref in expected['grad'].items():
        ref = ref.double()
        name = ours.get(off)
        g = grads.get(name) if name else None
        g = torch.zeros_like(ref) if g is None else g.double()
        if g.shape != ref.shape:
            bad.append((off, float('inf')))
            continue
        err = ((g - ref).norm() / (ref.norm() + GRAD_ABS / tol)).item()
        if err > worst:
            worst, worst_name = err, off
        if err > tol:
            bad.append((off, err))
    rows.append((f'grad ({len(expected["grad"])} tensors, worst '
                 f'{worst_name or "-"})', worst, tol, not bad))
    rows += [(f'  grad {n}', e, tol, False) for n, e in bad]
    # information: the custom autograd nodes the backward went through
    rows.append(('  backward nodes: ' + ', '.join(
        f'{k.replace("Backward", "")} x{v}' for k, v in nodes.items()),
        float(sum(nodes.values())), float('nan'), True))

    # optimizer groups
    scale_of, wd_of = {}, {}
    base_lr = cfg.optim_wrapper.optimizer.lr
    for g in ow.param_groups:
        for p in g['params']:
            scale_of[id(p)] = g['lr'] / base_lr
            wd_of[id(p)] = g.get('weight_decay',
                                 ow.optimizer.defaults.get('weight_decay'))
    params = dict(model.named_parameters())
    for key, table, got_of in (('lr_scale', expected['lr_scale'], scale_of),
                               ('weight_decay', expected['weight_decay'],
                                wd_of)):
        worst, bad = 0.0, []
        for off, ref in table.items():
            name = ours.get(off)
            got = got_of.get(id(params[name])) if name else None
            err = float('inf') if got is None else abs(got - float(ref))
            worst = max(worst, err)
            if not err <= GROUP_TOL:
                bad.append((off, err, got, float(ref)))
        rows.append((key, worst, GROUP_TOL, not bad))
        rows += [(f'  {key} {n}: ours {g} vs {r}', e, GROUP_TOL, False)
                 for n, e, g, r in bad]

    # schedule
    ref = expected['lr_schedule'].double()
    base = float(meta['lr_schedule']['base_lr'])
    got = scheduled_lrs(cfg, meta, model)
    stol = SCHEDULE_TOL * base
    if got.shape[0] != ref.shape[0]:
        rows.append((f'lr_schedule ({got.shape[0]} steps vs '
                     f'{ref.shape[0]})', float('inf'), stol, False))
    else:
        err = (got - ref[:, None]).abs().max().item()
        rows.append((f'lr_schedule ({ref.shape[0]} steps, all groups)', err,
                     stol, err <= stol))
    return rows


__all__ = ['check_train_dump', 'is_train_dump', 'training_step_grads',
           'build_train_model', 'build_optim_wrapper_cpu', 'scheduled_lrs']
