"""Training loops that replay the training step's forward and backward as a
CUDA graph.

At the recipes' batch of 6 a CAST ViT-B step on one GPU is short of work:
about half of an eager step is the host issuing ~2400 kernels one by one
(docs/benchmarks.md, "GPU"). Captured once as a CUDA graph, the forward,
the loss and the backward are replayed with one launch. Config::

    train_cfg = dict(type='CUDAGraphEpochBasedTrainLoop',  # or
                     # 'CUDAGraphIterBasedTrainLoop'
                     max_epochs=50, val_interval=1,
                     cuda_graph=dict(warmup_iters=3, max_graphs=4))

or ``python tools/train.py CONFIG --cuda-graph``, which swaps MMEngine's
``EpochBasedTrainLoop`` / ``IterBasedTrainLoop`` for these.

What runs where, each iteration:

* eagerly, as in MMEngine's step: the data preprocessor (the copy to the
  GPU, normalisation, the random mixup / cutmix and the device
  augmentation), the labels as the head's loss prepares them (stacked,
  one-hot and label smoothing where set), then the loss scaler, gradient
  clipping, the optimizer step and the non-finite guard
  (``GuardedOptimWrapper``), the hooks and the logging;
* in the graph: the recognizer's ``extract_feat``, the head, its
  ``loss_cls`` on the prepared labels, the sum of the losses, the division
  for gradient accumulation and the loss scale (device scalars the eager
  side sets before each replay), and the backward, which adds into the
  gradient buffers the parameters hold (zeroed in place, never set to
  ``None``, while this loop runs).

The same operators on the same values as MMEngine's ``train_step`` (the
``capture=False`` mode runs this split step eagerly, through the same
buffers: ``tests/test_cuda_graph.py`` checks it equal to ``train_step``
bit for bit on the CPU, and ``tools/gpu_check.py --checks cuda_graph``
the replayed graph against the eager loop on a GPU).

A graph is captured per *key* (input shape and dtype, label shape and
dtype) after ``warmup_iters`` eager iterations with that key, on a side
stream (as ``torch.cuda.graph`` requires: the cuBLAS / cuDNN handles, the
optimizer's state and the gradient buffers exist before the capture). At
most ``max_graphs`` keys are captured, all in one memory pool; a batch of
another key (a last, smaller batch of an epoch with ``drop_last=False``)
runs eagerly.
Graphs hold their activations' memory between steps (the validation loop
runs eagerly beside it). Before each replay the model is compared with what
the graphs were captured against (train mode, each parameter's storage,
``requires_grad`` and gradient buffer); when other code changed it (a hook
that freezes or unfreezes layers, replaces parameters, or sets gradients to
``None``) the graphs are dropped with a warning and captured again after
their warm-up, never replayed against stale addresses.

Activation checkpointing (``backbone.with_cp``, ``checkpoint_policy``)
is captured with the rest: its recomputation in the backward is part of the
graph (on an H200 the replayed step equalled the eager one bit for bit with
``with_cp=True``, ``'selective'`` and ``'narrow'``; docs/training.md).

Not supported, each refused with its reason when the loop starts: a CPU
(``capture=False`` aside), distributed runs (DDP needs its all-reduce
captured under conditions not checked here; FSDP / DeepSpeed shard and
gather inside the step), recognizers or heads whose loss is not MMAction2's
``BaseRecognizer.loss`` / ``BaseHead.loss`` (e.g. EPIC-KITCHENS' verb +
noun head), a neck; at the first iteration: inputs that are not one tensor
(the audio-visual recognizers), more than one view per training sample; at
the capture: a trainable parameter that got no gradient (AdamW would move
it on a zero gradient where the eager step leaves it alone).
"""
import contextlib
import logging

import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmaction.registry import LOOPS

__all__ = ['GraphedTrainStep', 'CUDAGraphEpochBasedTrainLoop',
           'CUDAGraphIterBasedTrainLoop', 'GRAPH_LOOP_OF']


class GraphedTrainStep:
    """The training step of a recognizer, its forward + backward replayed as
    a CUDA graph (see the module docstring).

    Args:
        warmup_iters (int): eager iterations of a key before its capture
            (>= 1; ``torch.cuda.graph`` needs the step's lazy set-up done).
        max_graphs (int): keys captured at most; others run eagerly.
        capture (bool): ``False`` runs the graph's split step eagerly through
            the same static buffers, on any device: for checking that the
            captured step is MMEngine's (tests), not for speed.
    """

    def __init__(self, warmup_iters=3, max_graphs=4, capture=True):
        if int(warmup_iters) < 1:
            raise ValueError(f'cuda_graph.warmup_iters must be >= 1 (the '
                             f'capture needs the step set up eagerly '
                             f'first), got {warmup_iters}')
        if int(max_graphs) < 1:
            raise ValueError(f'cuda_graph.max_graphs must be >= 1, got '
                             f'{max_graphs}')
        self.warmup_iters = int(warmup_iters)
        self.max_graphs = int(max_graphs)
        self.capture = bool(capture)
        self._checked = False
        self._seen = {}  # key -> eager iterations run
        self._graphs = {}  # key -> _Captured
        self._pool = None
        self._state = None  # what the graphs were captured against
        self.replayed = 0
        self.eager = 0
        self.resets = 0

    # ------------------------------------------------------------ checks --
    def check(self, model, optim_wrapper):
        """Raise ``ValueError`` naming what to change when ``model`` /
        ``optim_wrapper`` cannot run as a graph (module docstring)."""
        from mmaction.models.heads.base import BaseHead
        from mmaction.models.recognizers.base import BaseRecognizer
        from mmengine.optim import OptimWrapper, OptimWrapperDict

        def refuse(why):
            raise ValueError(f'CUDA-graph training (train_cfg type '
                             f'CUDAGraph*TrainLoop, tools/train.py '
                             f'--cuda-graph): {why}. Use the eager loop '
                             f'(EpochBasedTrainLoop / IterBasedTrainLoop).')

        if hasattr(model, 'module') or (
                torch.distributed.is_available()
                and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            refuse(f'the model is wrapped for a distributed run '
                   f'({type(model).__name__}); the graph step runs on one '
                   f'GPU without a wrapper (capturing DDP\'s all-reduce is '
                   f'not supported here, FSDP / DeepSpeed gather weights '
                   f'inside the step)')
        if not isinstance(model, BaseRecognizer):
            refuse(f'{type(model).__name__} is not an MMAction2 recognizer')
        if type(model).loss is not BaseRecognizer.loss:
            refuse(f'{type(model).__name__} computes its own loss')
        if getattr(model, 'with_neck', False):
            refuse('the recognizer has a neck (its auxiliary loss is not '
                   'captured)')
        head = getattr(model, 'cls_head', None)
        if not isinstance(head, BaseHead) or \
                type(head).loss is not BaseHead.loss or \
                type(head).loss_by_feat is not BaseHead.loss_by_feat:
            refuse(f'the head {type(head).__name__} has its own loss (only '
                   f'heads with MMAction2\'s single-label BaseHead loss are '
                   f'captured; e.g. not the verb + noun head)')
        if isinstance(optim_wrapper, OptimWrapperDict) or not isinstance(
                optim_wrapper, OptimWrapper):
            refuse(f'optim_wrapper is a {type(optim_wrapper).__name__}; one '
                   f'OptimWrapper / AmpOptimWrapper (or Guarded*) is needed')
        device = next(model.parameters()).device
        if self.capture and device.type != 'cuda':
            refuse(f'the model is on {device}; CUDA graphs need a CUDA '
                   f'device')
        self._checked = True

    # -------------------------------------------------------------- step --
    def __call__(self, model, data_batch, optim_wrapper):
        """One training iteration; returns the log variables as MMEngine's
        ``train_step`` does."""
        if not self._checked:
            self.check(model, optim_wrapper)
        _drop_frozen_grads(model)
        with optim_wrapper.optim_context(model):
            data = model.data_preprocessor(data_batch, True)
        inputs, samples = data['inputs'], data['data_samples']
        if not torch.is_tensor(inputs):
            raise ValueError(f'CUDA-graph training captures one input '
                             f'tensor; the data preprocessor gave '
                             f'{type(inputs).__name__}')
        if inputs.dim() < 2 or inputs.shape[1] != 1:
            raise ValueError(f'CUDA-graph training takes one view per '
                             f'training sample (inputs (N, 1, ...)); got '
                             f'{tuple(inputs.shape)}')
        labels, hard = _loss_labels(model.cls_head, samples, inputs.shape[0],
                                    inputs.device)
        key = (tuple(inputs.shape), inputs.dtype, tuple(labels.shape),
               labels.dtype)
        if self._graphs and _model_state(model) != self._state:
            self._reset()
        graph = self._graphs.get(key)
        if graph is None and self._seen.get(key, 0) >= self.warmup_iters \
                and len(self._graphs) < self.max_graphs:
            graph = self._capture(model, optim_wrapper, inputs, labels, key)
        if graph is None:
            return self._eager(model, data, optim_wrapper, key)
        return self._replay(model, graph, inputs, labels, hard,
                            optim_wrapper)

    def _eager(self, model, data, optim_wrapper, key):
        """MMEngine's ``train_step`` on the preprocessed batch (on a side
        stream before a capture, as ``torch.cuda.graph`` asks), gradients
        zeroed in place."""
        first = key not in self._seen
        self._seen[key] = self._seen.get(key, 0) + 1
        self.eager += 1
        if first and self._graphs:
            print_log(f'CUDA graph: batch of another shape {key[0]} / labels '
                      f'{key[2]} runs eagerly until it is captured',
                      logger='current', level=logging.INFO)
        stream = None
        if self.capture and self._seen[key] <= self.warmup_iters:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
        ctx = torch.cuda.stream(stream) if stream is not None else \
            contextlib.nullcontext()
        with ctx:
            with optim_wrapper.optim_context(model):
                losses = model._run_forward(data, mode='loss')
            parsed, log_vars = model.parse_losses(losses)
            optim_wrapper.update_params(
                parsed, zero_kwargs=dict(set_to_none=False))
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
        return log_vars

    def _capture(self, model, optim_wrapper, inputs, labels, key):
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and p.grad is None]
        if missing:
            raise ValueError(
                f'CUDA-graph training: {len(missing)} trainable parameters '
                f'got no gradient in the eager steps (e.g. '
                f'{", ".join(missing[:3])}); a graph would give them zero '
                f'gradients that AdamW acts on. Freeze them '
                f'(requires_grad=False) or use the eager loop.')
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        before = [g.data_ptr() for g in grads]
        cap = _Captured(inputs.clone(), labels.clone(),
                        torch.ones((), device=inputs.device))
        # AmpOptimWrapper (and Guarded*): autocast with its dtype, without
        # autocast's cast cache (a capture must not keep casts across
        # replays), and the loss scaled by the scaler's device scale
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        if scaler is not None and getattr(scaler, '_scale', None) is None:
            scaler.scale(torch.zeros((), device=inputs.device))  # lazy init

        def step():
            autocast = contextlib.nullcontext() if scaler is None else \
                torch.autocast(inputs.device.type, cache_enabled=False,
                               dtype=optim_wrapper.cast_dtype)
            with autocast:
                losses, scores = _graph_losses(model, cap.inputs, cap.labels)
            loss, _ = model.parse_losses(losses)
            scaled = loss / cap.divisor
            if scaler is not None:
                scaled = scaler.scale(scaled)
            scaled.backward()
            return losses, scores

        if self.capture:
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool,
                                  capture_error_mode='thread_local'):
                cap.losses, cap.scores = step()
            self._pool = graph.pool()
            cap.replay = graph.replay
            torch.cuda.synchronize()
            # the graph's activations live in its own pool: the blocks the
            # eager warm-up cached in the default pool would stay reserved
            # beside it (about twice the step's memory) until returned
            torch.cuda.empty_cache()
        else:
            def replay():
                cap.losses, cap.scores = step()
            cap.replay = replay
        if [g.data_ptr() for g in grads] != before or any(
                p.grad is None for p in model.parameters()
                if p.requires_grad):
            raise RuntimeError(
                'CUDA-graph training: the captured backward replaced the '
                'parameters\' gradient tensors instead of adding into them; '
                'use the eager loop')
        self._graphs[key] = cap
        self._state = _model_state(model)
        how = 'replayed' if self.capture else 'capture=False: run uncaptured'
        mem = (f', {torch.cuda.memory_reserved(inputs.device) / 2**30:.2f} '
               f'GiB reserved on the GPU' if self.capture else '')
        print_log(f'CUDA graph captured for inputs {key[0]} {key[1]}, labels '
                  f'{key[2]} {key[3]} after {self._seen.get(key, 0)} eager '
                  f'iterations ({how} from now on{mem})', logger='current',
                  level=logging.INFO)
        return cap

    def _reset(self):
        """Drop every graph: the model changed under them (a parameter
        frozen or unfrozen, replaced, its gradient set to ``None`` by other
        code, the model left in eval mode). Each key warms up and is
        captured again."""
        self._graphs, self._seen, self._pool, self._state = {}, {}, None, None
        self.resets += 1
        print_log('CUDA graph: the model\'s parameters, their gradient '
                  'buffers or requires_grad, or its train mode changed since '
                  'the capture; the graphs are dropped and captured again '
                  'after their warm-up', logger='current',
                  level=logging.WARNING)

    def _replay(self, model, cap, inputs, labels, hard, optim_wrapper):
        cap.inputs.copy_(inputs)
        cap.labels.copy_(labels)
        cap.divisor.fill_(_loss_factor(optim_wrapper))
        cap.replay()
        self.replayed += 1
        # the values of this step, before the next replay rewrites them
        losses = {}
        if hard is not None:
            from mmaction.evaluation import top_k_accuracy
            head = model.cls_head
            accs = top_k_accuracy(cap.scores.detach().cpu().numpy(),
                                  hard.detach().cpu().numpy(), head.topk)
            for k, a in zip(head.topk, accs):
                losses[f'top{k}_acc'] = torch.tensor(a, device=inputs.device)
        losses.update({k: v.detach().clone() for k, v in cap.losses.items()})
        parsed, log_vars = model.parse_losses(losses)
        with _backward_done(optim_wrapper):
            optim_wrapper.update_params(
                parsed, zero_kwargs=dict(set_to_none=False))
        return log_vars


def _model_state(model):
    """What a captured graph depends on outside its buffers: the train
    mode, each parameter's storage, whether it trains, and its gradient
    buffer (the backward adds into those addresses)."""
    return (model.training, tuple(
        (p.data_ptr(), p.requires_grad,
         p.grad.data_ptr() if p.grad is not None else 0)
        for p in model.parameters()))


def _drop_frozen_grads(model):
    """Gradients are zeroed in place (the graph adds into them), but a
    parameter frozen since keeps no gradient: as after MMEngine's
    ``zero_grad()``, AdamW skips it instead of decaying it on a zero
    gradient."""
    for p in model.parameters():
        if p.grad is not None and not p.requires_grad:
            p.grad = None


class _Captured:
    """The static buffers of one captured key and its replay."""

    def __init__(self, inputs, labels, divisor):
        self.inputs, self.labels, self.divisor = inputs, labels, divisor
        self.losses = self.scores = self.replay = None


def _graph_losses(model, inputs, labels):
    """``BaseRecognizer.loss`` + ``BaseHead.loss`` on prepared labels: the
    same operators, without the data samples (the accuracy, computed on the
    host, is left to after the replay)."""
    feats, kwargs = model.extract_feat(inputs)
    scores = model.cls_head(feats, **kwargs)
    loss = model.cls_head.loss_cls(scores, labels)
    losses = dict(loss) if isinstance(loss, dict) else dict(loss_cls=loss)
    return losses, scores


def _loss_labels(head, samples, batch, device):
    """The labels ``BaseHead.loss_by_feat`` gives its ``loss_cls`` (stacked,
    squeezed, one-hot + label smoothing where set; the same operators) and
    the hard labels its accuracy uses (``None`` for soft labels)."""
    import torch.nn.functional as F
    labels = torch.stack([s.gt_label for s in samples]).to(device)
    labels = labels.squeeze()
    if labels.shape == torch.Size([]):
        labels = labels.unsqueeze(0)
    elif labels.dim() == 1 and labels.size()[0] == head.num_classes \
            and batch == 1:
        labels = labels.unsqueeze(0)
    soft = tuple(labels.shape) == (batch, head.num_classes)
    hard = None if soft else labels
    if head.label_smooth_eps != 0:
        if not soft:
            labels = F.one_hot(labels, num_classes=head.num_classes)
        labels = ((1 - head.label_smooth_eps) * labels +
                  head.label_smooth_eps / head.num_classes)
    return labels, hard


def _loss_factor(optim_wrapper):
    """What ``optim_wrapper.scale_loss`` divides the loss by at this
    iteration (the accumulation count, or the remainder at an epoch's
    end)."""
    probe = optim_wrapper.scale_loss(torch.ones((), dtype=torch.float64))
    return float(round(1.0 / float(probe)))


@contextlib.contextmanager
def _backward_done(optim_wrapper):
    """``optim_wrapper.update_params`` after the graph ran the backward:
    its ``backward`` only counts the iteration (as MMEngine's does after
    ``loss.backward()``), the step, the guard and ``zero_grad`` run as
    usual."""
    def counted(loss, **kwargs):
        optim_wrapper._inner_count += 1
    optim_wrapper.backward = counted
    try:
        yield
    finally:
        del optim_wrapper.backward


class _GraphLoopMixin:
    """MMEngine's loop arguments plus ``cuda_graph`` (the arguments of
    :class:`GraphedTrainStep`); each iteration through that step."""

    def __init__(self, *args, cuda_graph=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph_step = GraphedTrainStep(**dict(cuda_graph or {}))

    def run(self):
        # refuse before the first iteration (and its hooks) runs
        self.graph_step.check(self.runner.model, self.runner.optim_wrapper)
        return super().run()

    def _graph_iter(self, batch_idx, data_batch):
        runner = self.runner
        runner.call_hook('before_train_iter', batch_idx=batch_idx,
                         data_batch=data_batch)
        outputs = self.graph_step(runner.model, data_batch,
                                  runner.optim_wrapper)
        runner.call_hook('after_train_iter', batch_idx=batch_idx,
                         data_batch=data_batch, outputs=outputs)
        self._iter += 1


@LOOPS.register_module()
class CUDAGraphEpochBasedTrainLoop(_GraphLoopMixin, EpochBasedTrainLoop):
    """MMEngine's ``EpochBasedTrainLoop`` whose step runs as a CUDA graph
    (:class:`GraphedTrainStep`; ``cuda_graph``: its arguments)."""

    def run_iter(self, idx, data_batch):
        self._graph_iter(idx, data_batch)


@LOOPS.register_module()
class CUDAGraphIterBasedTrainLoop(_GraphLoopMixin, IterBasedTrainLoop):
    """MMEngine's ``IterBasedTrainLoop`` whose step runs as a CUDA graph
    (:class:`GraphedTrainStep`; ``cuda_graph``: its arguments)."""

    def run_iter(self, data_batch):
        self._graph_iter(self._iter, data_batch)


#: the graph loop of each MMEngine loop type (``tools/train.py --cuda-graph``)
GRAPH_LOOP_OF = dict(EpochBasedTrainLoop='CUDAGraphEpochBasedTrainLoop',
                     IterBasedTrainLoop='CUDAGraphIterBasedTrainLoop')
