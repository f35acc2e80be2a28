"""The CUDA-graph training loops (cast_mmaction/engine/cuda_graph.py).

On a CPU the graph cannot be captured; ``GraphedTrainStep(capture=False)``
runs the very step the capture records (the forward, the loss and the
backward on static buffers, the optimizer and the guard outside) eagerly.
These tests hold that split step to MMEngine's ``train_step`` bit for bit:
labels hard / smoothed / mixed, gradient accumulation with a remainder, a
non-finite loss skipped, and through MMEngine's Runner. The replayed graph
itself is checked against the eager loop on a GPU by ``tools/gpu_check.py
--checks cuda_graph`` (docs/training.md)."""
import copy

import numpy as np
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from cast_mmaction.engine.cuda_graph import GraphedTrainStep
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model

NUM_CLASSES = 5
FRAMES, SIZE = 4, 32


def tiny(label_smooth_eps=0.0, blending=None, drop_path=0.1,
         checkpoint_policy=None, **kw):
    pre = dict(type='ActionDataPreprocessor', format_shape='NCTHW',
               mean=[120.0] * 3, std=[60.0] * 3)
    if blending:  # MMAction2 appends to the probs list it is given
        pre['blending'] = copy.deepcopy(blending)
    cfg = cast_recognizer_cfg(num_classes=NUM_CLASSES, embed_dim=32, depth=2,
                              num_heads=2, num_frames=FRAMES, img_size=SIZE,
                              patch_size=16, drop_path_rate=drop_path,
                              label_smooth_eps=label_smooth_eps,
                              data_preprocessor=pre, **kw)
    cfg['backbone']['checkpoint_policy'] = checkpoint_policy
    torch.manual_seed(0)
    return build_model(cfg)


def wrapper(model, counts=1, guarded=True):
    return build_optim_wrapper(model, dict(
        type='GuardedOptimWrapper' if guarded else 'OptimWrapper',
        accumulative_counts=counts,
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05)))


def batch(seed, n=3, nan=False):
    from mmaction.structures import ActionDataSample
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (1, 3, FRAMES, SIZE, SIZE), generator=g,
                            dtype=torch.uint8).float() for _ in range(n)]
    if nan:
        inputs[0][0, 0, 0, 0, 0] = float('nan')
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return dict(inputs=inputs, data_samples=[
        ActionDataSample().set_gt_label(int(l)) for l in labels])


def assert_same_params(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def seed(value):
    # the blending picks its augment with NumPy, drop path draws with torch
    np.random.seed(value)
    torch.manual_seed(value)


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a CUDA device (the capture itself; the tests above check '
    'the uncaptured step on the CPU)')


def run_both(model, batches, counts=1, max_counts=None, step=None):
    """The same batches through ``train_step`` and through the split step,
    each from the same weights and RNG state; returns both models, their
    log variables per iteration and the step."""
    ref, got = model, copy.deepcopy(model)
    ow_ref, ow_got = wrapper(ref, counts), wrapper(got, counts)
    if max_counts:
        ow_ref.initialize_count_status(ref, 0, max_counts)
        ow_got.initialize_count_status(got, 0, max_counts)
    step = step or GraphedTrainStep(warmup_iters=2, capture=False)
    logs_ref, logs_got = [], []
    device = next(model.parameters()).device
    for i, b in enumerate(batches):
        b = dict(b, inputs=[x.to(device) for x in b['inputs']])
        seed(100 + i)
        logs_ref.append(ref.train_step(copy.deepcopy(b), optim_wrapper=ow_ref))
        seed(100 + i)
        logs_got.append(step(got, copy.deepcopy(b), ow_got))
    return ref, got, logs_ref, logs_got, step, (ow_ref, ow_got)


def assert_same_logs(logs_ref, logs_got):
    for i, (a, b) in enumerate(zip(logs_ref, logs_got)):
        assert list(a) == list(b), i
        for k in a:
            assert torch.equal(a[k].float(), b[k].float()), (i, k, a[k], b[k])


MIXUP = dict(type='RandomBatchAugment',
             augments=[dict(type='MixupBlending', alpha=0.8,
                            num_classes=NUM_CLASSES),
                       dict(type='CutmixBlending', alpha=1.0,
                            num_classes=NUM_CLASSES)],
             probs=[0.5, 0.3])  # 20 %: no blend


@pytest.mark.parametrize('labels', ['hard', 'smoothed', 'mixup'])
def test_split_step_is_train_step(labels):
    """Hard labels (cross-entropy + accuracy), label smoothing (soft path),
    mixup / cutmix / none picked at random: the same losses, logged values
    and weights bit for bit."""
    model = tiny(label_smooth_eps=0.1 if labels == 'smoothed' else 0.0,
                 blending=MIXUP if labels == 'mixup' else None)
    batches = [batch(i) for i in range(7)]
    ref, got, a, b, step, _ = run_both(model, batches)
    assert_same_logs(a, b)
    assert_same_params(ref, got)
    assert step.replayed >= 3 and step.eager >= 2
    if labels == 'hard':
        assert 'top1_acc' in b[-1]
    if labels == 'mixup':  # unblended batches get one-hot labels too
        assert list(step._graphs) == [((3, 1, 3, FRAMES, SIZE, SIZE),
                                       torch.float32, (3, NUM_CLASSES),
                                       torch.float32)]


@pytest.mark.parametrize('memory', [dict(with_cp=True),
                                    dict(checkpoint_policy='selective')])
def test_activation_checkpointing_in_the_split_step(memory):
    """Checkpointed layers (recomputed in the backward, drop path's RNG
    state saved and restored) inside the captured part: the same weights as
    train_step."""
    ref, got, a, b, step, _ = run_both(tiny(**memory),
                                       [batch(i) for i in range(6)])
    assert_same_logs(a, b)
    assert_same_params(ref, got)
    assert step.replayed == 4


def test_accumulation_with_a_remainder():
    """Accumulation 3 over 7 iterations (windows 3, 3, 1): the divisor the
    graph is given follows MMEngine's scale_loss, the update cadence its
    should_update."""
    ref, got, a, b, step, _ = run_both(tiny(), [batch(i) for i in range(7)],
                                       counts=3, max_counts=7)
    assert_same_logs(a, b)
    assert_same_params(ref, got)
    assert step.replayed == 5


def test_a_non_finite_loss_is_skipped_as_in_train_step():
    """A NaN clip in the middle of an accumulation window, after the
    capture: the guard drops the window and skips the update, as in the
    eager step (the graph's backward has run; its gradients are zeroed)."""
    batches = [batch(i, nan=(i == 4)) for i in range(7)]
    ref, got, a, b, step, (ow_ref, ow_got) = run_both(
        tiny(), batches, counts=2, max_counts=7)
    assert ow_ref.nonfinite_skips == ow_got.nonfinite_skips == 1
    assert_same_params(ref, got)
    assert all(torch.isfinite(p).all() for p in got.parameters())


def test_a_changed_model_drops_the_graphs_and_recaptures():
    """A layer frozen after the capture (as a freezing hook would): the
    graphs are dropped, the step warms up and captures again, and the
    weights follow train_step's with the same freeze."""
    ref, got = tiny(), None
    got = copy.deepcopy(ref)
    ow_ref, ow_got = wrapper(ref), wrapper(got)
    step = GraphedTrainStep(warmup_iters=2, capture=False)
    for i in range(8):
        if i == 4:
            for m in (ref, got):
                m.cls_head.fc_cls.weight.requires_grad_(False)
        b = batch(i)
        seed(i)
        ref.train_step(copy.deepcopy(b), optim_wrapper=ow_ref)
        seed(i)
        step(got, copy.deepcopy(b), ow_got)
    assert step.resets == 1
    assert step.replayed == 2 + 2 and step.eager == 2 + 2
    assert_same_params(ref, got)
    # gradients set to None by other code also drop the graphs
    got.zero_grad(set_to_none=True)
    step(got, batch(9), ow_got)
    assert step.resets == 2


def test_other_shapes_run_eagerly_beyond_max_graphs():
    model = tiny()
    step = GraphedTrainStep(warmup_iters=1, max_graphs=1, capture=False)
    batches = [batch(i, n=3) for i in range(3)] + [batch(9, n=2)] * 2
    ref, got, a, b, step, _ = run_both(model, batches, step=step)
    assert_same_params(ref, got)
    assert len(step._graphs) == 1 and step.replayed == 2
    assert step.eager == 3  # one warm-up, the two batches of 2


def test_refusals_name_what_to_change():
    model = tiny()
    ow = wrapper(model)
    with pytest.raises(ValueError, match='CUDA device'):
        GraphedTrainStep().check(model, ow)
    with pytest.raises(ValueError, match='warmup_iters'):
        GraphedTrainStep(warmup_iters=0)
    vn = build_model(cast_recognizer_cfg(
        composition=True, verb_classes=3, noun_classes=4, embed_dim=32,
        depth=1, num_heads=2, num_frames=FRAMES, img_size=SIZE))
    with pytest.raises(ValueError, match='own loss'):
        GraphedTrainStep(capture=False).check(vn, wrapper(vn))

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m
    with pytest.raises(ValueError, match='distributed'):
        GraphedTrainStep(capture=False).check(Wrapped(model), ow)


def test_inputs_other_than_one_tensor_of_one_view_are_refused(monkeypatch):
    model = tiny()
    ow = wrapper(model)
    step = GraphedTrainStep(capture=False)
    pre = type(model.data_preprocessor).forward

    def as_dict(self, data, training=False):
        out = pre(self, data, training)
        return dict(out, inputs=dict(video=out['inputs']))

    def two_views(self, data, training=False):
        out = pre(self, data, training)
        return dict(out, inputs=out['inputs'].repeat(1, 2, 1, 1, 1, 1))

    monkeypatch.setattr(type(model.data_preprocessor), 'forward', as_dict)
    with pytest.raises(ValueError, match='one input tensor.*dict'):
        step(model, batch(0), ow)
    monkeypatch.setattr(type(model.data_preprocessor), 'forward', two_views)
    with pytest.raises(ValueError, match='one view per training sample'):
        step(model, batch(0), ow)


def test_a_parameter_without_gradient_is_refused_at_capture():
    model = tiny()
    model.cls_head.unused = torch.nn.Parameter(torch.zeros(3))
    ow = wrapper(model)
    step = GraphedTrainStep(warmup_iters=1, capture=False)
    step(model, batch(0), ow)  # eager
    with pytest.raises(ValueError, match='cls_head.unused'):
        step(model, batch(1), ow)


def test_train_tool_swaps_the_loop():
    from mmengine.config import Config
    from tools.train import merge_args, parse_args
    cfg = Config(dict(train_cfg=dict(type='EpochBasedTrainLoop',
                                     max_epochs=1)))
    merge_args(cfg, parse_args(['x.py', '--cuda-graph']))
    assert cfg.train_cfg.type == 'CUDAGraphEpochBasedTrainLoop'
    cfg = Config(dict(train_cfg=dict(type='MyLoop')))
    with pytest.raises(ValueError, match='MyLoop'):
        merge_args(cfg, parse_args(['x.py', '--cuda-graph']))
    cfg = Config(dict(train_cfg=dict(type='EpochBasedTrainLoop')))
    with pytest.raises(ValueError, match='one GPU without a launcher'):
        merge_args(cfg, parse_args(['x.py', '--cuda-graph', '--launcher',
                                    'pytorch']))


class _Clips(torch.utils.data.Dataset):
    """In-memory clips in the recognizer's input format (no pipeline)."""

    def __init__(self, n=10):
        self.items = [batch(i, n=1) for i in range(n)]
        self.metainfo = {}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        b = self.items[i]
        return dict(inputs=b['inputs'][0], data_samples=b['data_samples'][0])


@needs_cuda
@pytest.mark.parametrize('counts,with_cp', [(1, False), (3, False),
                                            (3, True)])
def test_the_replayed_graph_matches_train_step_on_cuda(counts, with_cp):
    """The captured graph replayed on a GPU (mixup, label smoothing, drop
    path, accumulation 1 and 3 with a remainder, activation checkpointing)
    against MMEngine's train_step: the same logged values and weights
    within fp32 rounding."""
    model = tiny(label_smooth_eps=0.1, blending=MIXUP,
                 with_cp=with_cp).cuda()
    step = GraphedTrainStep(warmup_iters=2, capture=True)
    ref, got, a, b, step, _ = run_both(model, [batch(i) for i in range(9)],
                                       counts=counts, max_counts=9, step=step)
    assert step.replayed == 7 and len(step._graphs) == 1
    for x, y in zip(a, b):
        for k in x:
            torch.testing.assert_close(y[k].float(), x[k].float())
    for (n, p), q in zip(ref.named_parameters(), got.parameters()):
        torch.testing.assert_close(q, p, msg=n)


def _runner(model, work_dir, train_cfg, sampler=None, default_hooks=None,
            **kwargs):
    """MMEngine's Runner on :class:`_Clips` (batches of 3), AdamW with
    accumulation 2 under the non-finite guard."""
    from mmengine.runner import Runner
    return Runner(
        model=model, work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Clips(), batch_size=3, num_workers=0,
            sampler=sampler or dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(type='GuardedOptimWrapper', accumulative_counts=2,
                           optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=train_cfg, default_scope='mmaction',
        default_hooks=default_hooks or dict(checkpoint=None),
        log_level='WARNING', **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_the_loop_refuses_a_cpu_run_before_its_first_iteration(tmp_path):
    from mmengine.hooks import Hook

    class Iterations(Hook):
        started = 0

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            Iterations.started += 1

    model = tiny()
    before = copy.deepcopy(model.state_dict())
    runner = _runner(model, tmp_path,
                     dict(type='CUDAGraphEpochBasedTrainLoop', max_epochs=1),
                     custom_hooks=[Iterations()])
    with pytest.raises(ValueError, match='CUDA graphs need a CUDA device'):
        runner.train()
    assert Iterations.started == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda',
                                                         marks=needs_cuda)])
@pytest.mark.parametrize('loop', ['EpochBasedTrainLoop', 'IterBasedTrainLoop'])
def test_runner_trains_the_same_through_the_graph_loop(tmp_path, loop,
                                                       device):
    """MMEngine's Runner with the graph loop and with its own loop: the
    same weights after 2 epochs / 7 iterations (bit for bit uncaptured on
    the CPU, within fp32 rounding replayed on a GPU), hooks and logging
    run, the graph path took the steps after the warm-up."""
    capture = device == 'cuda'

    def run(graph, work):
        model = tiny().to(device)
        cfg = dict(type='CUDAGraph' + loop, cuda_graph=dict(
            warmup_iters=2, capture=capture)) if graph else dict(type=loop)
        cfg.update(max_epochs=2) if loop.startswith('Epoch') else \
            cfg.update(max_iters=7)
        runner = _runner(model, tmp_path / work, cfg,
                         default_hooks=dict(logger=dict(type='LoggerHook',
                                                        interval=1),
                                            checkpoint=None),
                         randomness=dict(seed=3))
        runner.train()
        return runner
    ref, got = run(False, 'eager'), run(True, 'graph')
    if capture:
        for (n, p), q in zip(ref.model.named_parameters(),
                             got.model.parameters()):
            torch.testing.assert_close(q, p, msg=n)
    else:
        assert_same_params(ref.model, got.model)
    step = got.train_loop.graph_step
    assert step.replayed > 0 and step.eager >= 2


def test_a_resumed_graph_run_ends_where_an_uninterrupted_run_does(tmp_path):
    """2 epochs, a checkpoint and a resume for the third, through the graph
    loop (its graphs start again from the warm-up after the resume) and
    through MMEngine's loop, and 3 epochs in one go: the same weights bit
    for bit (uncaptured, CPU)."""

    def run(graph, work, epochs, resume=None):
        loop = dict(type='CUDAGraphEpochBasedTrainLoop', cuda_graph=dict(
            warmup_iters=2, capture=False)) if graph else dict(
                type='EpochBasedTrainLoop')
        runner = _runner(
            tiny(), tmp_path / work, dict(loop, max_epochs=epochs),
            sampler=dict(type='ReproducibleSampler', shuffle=True),
            # `end` set: MMEngine's default is the run's max_epochs, which
            # the shorter first run would save into its checkpoint
            param_scheduler=dict(type='CosineAnnealingLR', T_max=3,
                                 by_epoch=True, end=3),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                               interval=1),
                               resume_state=dict(type='ResumeStateHook')),
            randomness=dict(seed=3), resume=resume is not None,
            load_from=resume)
        runner.train()
        return runner

    ends = {}
    for graph in (False, True):
        work = 'graph' if graph else 'eager'
        run(graph, work, 2)
        ends[graph] = run(graph, work, 3,
                          resume=str(tmp_path / work / 'epoch_2.pth'))
    assert ends[True].train_loop.graph_step.replayed > 0
    assert_same_params(ends[False].model, ends[True].model)
    assert_same_params(run(False, 'whole', 3).model, ends[True].model)
