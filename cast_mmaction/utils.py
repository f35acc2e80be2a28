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


ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_fp16',
             'avx512_vnni', 'amx_tile', 'amx_bf16', 'amx_int8', 'avx_vnni',
             'sse4_2')


def cpu_facts():
    """The CPU a measurement ran on, from ``/proc/cpuinfo`` (Linux; empty
    elsewhere): ``cpu_model``, ``cpu_vendor`` (``vendor_id``, e.g.
    ``AuthenticAMD`` / ``GenuineIntel``), ``cpu_count`` (logical CPUs
    listed) and ``cpu_isa`` (the :data:`ISA_FLAGS` it has), for the
    benchmark tools' records and the speed-up rules
    (``models/speedups.py``)."""
    try:
        with open('/proc/cpuinfo') as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    models = [ln.split(':', 1)[1].strip() for ln in lines
              if ln.startswith('model name')]
    vendors = [ln.split(':', 1)[1].strip() for ln in lines
               if ln.startswith('vendor_id')]
    flags = next((set(ln.split(':', 1)[1].split()) for ln in lines
                  if ln.startswith('flags')), set())
    return dict(cpu_model=models[0] if models else None,
                cpu_vendor=vendors[0] if vendors else None,
                cpu_count=len(models),
                cpu_isa=[f for f in ISA_FLAGS if f in flags])


def device_problem(spec):
    """Why torch cannot run on the device ``spec`` (``'cpu'``, ``'cuda'``,
    ``'cuda:1'``) here, in words naming what to do; None when it can. The
    benchmark tools check ``--device`` with it before their first timing."""
    import torch
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        return f'not a device ({e}); give cpu or cuda[:i]'
    if dev.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (dev.index or 0):
            return (f'torch sees {count} CUDA device(s) here (torch '
                    f'{torch.__version__}); run it on a GPU host, or use '
                    f'cpu')
    return None
