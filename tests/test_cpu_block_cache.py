"""The speed-up ``cpu_block_cache`` (models/cpu_block_cache.py and its C++
side csrc/cpu_block_cache.cpp): large CPU blocks from their own mappings,
reused by size, the cache bounded, the same numbers, the allocator process-
wide but restored after each test here."""
import multiprocessing
import os
import sys

import pytest
import torch

from cast_mmaction.models import cpp_extensions, cpu_block_cache, speedups

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='cpu_block_cache: Linux only')

MIB = 1 << 20


@pytest.fixture(scope='module')
def ext():
    ok, why = cpp_extensions.toolchain()
    if not ok:
        pytest.skip(f'building cast_mmaction/csrc/cpu_block_cache.cpp: {why}')
    return cpu_block_cache.extension()  # built once per process (~10 s)


@pytest.fixture
def cache(ext):
    """The cache installed for one test, then torch's allocator again and
    the cached blocks unmapped (the allocator is process-wide)."""
    yield cpu_block_cache
    cpu_block_cache.uninstall()
    cpu_block_cache.empty_cache()
    assert cpu_block_cache.stats()['installed'] == 0


def test_large_blocks_are_reused_by_size_small_ones_left_to_torch(cache):
    cache.install(64)
    s0 = cache.stats()
    x = torch.empty(4 * MIB // 4)
    ptr = x.data_ptr()
    del x
    assert cache.stats()['cached'] == 4 * MIB
    y = torch.empty(4 * MIB // 4)  # the same size: the same block
    assert y.data_ptr() == ptr
    s1 = cache.stats()
    assert s1['hits'] == s0['hits'] + 1 and s1['misses'] == s0['misses'] + 1
    small = torch.empty(1024)  # 4 KiB: torch's allocator
    assert cache.stats()['live_blocks'] == s1['live_blocks']
    z = torch.empty(3 * MIB // 4)  # another size: a new mapping
    assert z.data_ptr() != ptr and cache.stats()['misses'] == s1['misses'] + 1
    del y, z, small


def test_a_larger_block_up_to_twice_the_size_serves_a_missing_size(cache):
    """With no block of the asked size cached, the smallest cached block of
    up to twice the size serves it (a fit) instead of a new mapping, and
    goes back to the cache under its own size; a block more than twice the
    size does not."""
    cache.install(64)
    big = torch.empty(4 * MIB // 4)
    mid = torch.empty(6 * MIB // 4)
    p_big, p_mid = big.data_ptr(), mid.data_ptr()
    del big, mid
    s0 = cache.stats()
    x = torch.empty(3 * MIB // 4)  # 3 MiB: the 4 MiB block (the smallest fit)
    assert x.data_ptr() == p_big
    s1 = cache.stats()
    assert (s1['fits'], s1['hits'], s1['misses']) == (
        s0['fits'] + 1, s0['hits'] + 1, s0['misses'])
    assert s1['cached'] == 6 * MIB
    del x
    assert cache.stats()['cached'] == 10 * MIB  # back as 4 MiB
    y = torch.empty(4 * MIB // 4)  # the exact size again: that block
    assert y.data_ptr() == p_big
    z = torch.empty(2 * MIB // 4)  # 6 MiB is more than twice 2 MiB: mapped
    assert z.data_ptr() != p_mid
    assert cache.stats()['misses'] == s1['misses'] + 1
    del y, z


def test_the_most_recently_freed_block_goes_first(cache):
    """Of two cached blocks of a size, the one freed last (likeliest still
    in the CPU's caches) is handed out first."""
    cache.install(64)
    a, b = torch.empty(2 * MIB // 4), torch.empty(2 * MIB // 4)
    pa, pb = a.data_ptr(), b.data_ptr()
    del a
    del b
    x = torch.empty(2 * MIB // 4)
    assert x.data_ptr() == pb
    del x
    c, d = torch.empty(2 * MIB // 4), torch.empty(2 * MIB // 4)
    assert (c.data_ptr(), d.data_ptr()) == (pb, pa)


def test_the_cache_holds_at_most_its_limit(cache):
    cache.install(8)
    s0 = cache.stats()
    xs = [torch.empty((2 + i) * MIB // 4) for i in range(6)]  # 27 MiB
    mapped = cache.stats()['mapped']
    del xs
    s = cache.stats()
    assert s['cached'] <= 8 * MIB
    assert s['unmaps'] > s0['unmaps']  # the largest went back first
    assert s['mapped'] == mapped - (27 * MIB - s['cached'])
    cache.install(0)  # a new limit applies at once
    assert cache.stats()['cached'] == 0


def test_uninstall_gives_new_blocks_to_torch(cache):
    cache.install(64)
    cache.uninstall()
    s0 = cache.stats()
    x = torch.empty(4 * MIB // 4)
    s1 = cache.stats()
    assert (s1['hits'], s1['misses']) == (s0['hits'], s0['misses'])
    assert s1['installed'] == 0
    del x


def test_raw_allocations_and_convolutions(cache):
    """oneDNN's convolution takes scratch through raw_allocate /
    raw_deallocate (context == pointer): both sizes of block work."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 16, 96, 96), torch.randn(32, 16, 3, 3)
    ref = torch.nn.functional.conv2d(x, w)
    cache.install(64, min_bytes=4096)
    out = torch.nn.functional.conv2d(x, w)
    assert torch.equal(out, ref)
    assert cache.stats()['misses'] > 0  # blocks came from the cache


def _child_allocates():
    torch.set_num_threads(1)  # as a DataLoader worker: no OpenMP after fork
    x = torch.full((4 * MIB // 4,), 1.5)  # a cached block's size
    y = torch.full((6 * MIB // 4,), 2.0)  # a new mapping
    ok = float(x.sum()) == 1.5 * x.numel() and float(y.sum()) == 2.0 * y.numel()
    os._exit(0 if ok and cpu_block_cache.stats()['installed'] else 3)


def test_a_forked_child_can_allocate(cache):
    """A DataLoader worker forked after installing: the child's copy of
    the cache serves its allocations (an inherited cached block, a new
    mapping)."""
    cache.install(64)
    x = torch.empty(4 * MIB // 4)
    del x  # a cached block the child inherits
    ctx = multiprocessing.get_context('fork')
    p = ctx.Process(target=_child_allocates)
    p.start()
    p.join(60)
    assert p.exitcode == 0


def _tiny(**sp):
    from cast_mmaction.models.presets import cast_backbone_cfg
    from cast_mmaction.utils import build_model
    torch.manual_seed(0)
    cfg = cast_backbone_cfg(embed_dim=64, depth=2, num_heads=4,
                            num_frames=4, img_size=64)
    cfg.update(drop_path_rate=0.2, speedups=sp or None)
    for e in cfg['experts'].values():
        e['pretrained'] = None
    return build_model(cfg)


def _step(bb):
    bb.train().zero_grad(set_to_none=True)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator()
                    .manual_seed(5))
    out = bb(x)
    sum(o.pow(2).sum() for o in out).backward()
    return out, {n: p.grad.clone() for n, p in bb.named_parameters()
                 if p.grad is not None}


def test_training_with_the_cache_changes_no_number(cache, monkeypatch):
    """``speedups=dict(cpu_block_cache=N)``: installed at the first fp32 CPU
    forward; a training step's outputs and gradients are the same bit for
    bit (here every block of 4 KiB or more goes through the cache)."""
    monkeypatch.setattr(cpu_block_cache, 'MIN_BYTES', 4096)
    ref = _tiny(preset='cpu', checkpoint='fusion')
    out_ref, g_ref = _step(ref)
    bb = _tiny(preset='cpu', checkpoint='fusion', cpu_block_cache=16)
    bb.load_state_dict(ref.state_dict())
    assert cache.stats()['installed'] == 0  # not before a forward
    for _ in range(2):
        s0 = cache.stats()
        out, g = _step(bb)
        s = cache.stats()
        assert s['installed'] == 1 and s['cache_bytes'] == 16 * MIB
        assert s['hits'] + s['misses'] > s0['hits'] + s0['misses']
        for a, b in zip(out, out_ref):
            assert torch.equal(a, b)
        assert g.keys() == g_ref.keys()
        for k in g:
            assert torch.equal(g[k], g_ref[k]), k
    assert s['hits'] > s0['hits']  # the second step reused blocks


def test_switching_between_training_and_inference_empties_the_cache(
        cache, monkeypatch):
    """The blocks a training step frees cannot serve an inference forward's
    sizes (a block goes to a tensor of exactly its size): the cache is
    emptied when the backbone switches between the two, not between steps
    of one kind."""
    monkeypatch.setattr(cpu_block_cache, 'MIN_BYTES', 4096)
    bb = _tiny(preset='cpu', cpu_block_cache=64)
    x = torch.randn(2, 3, 4, 64, 64)
    _step(bb)
    trained = cache.stats()['cached']
    assert trained > 0
    _step(bb)  # a second training step: its blocks reused, none unmapped
    s = cache.stats()
    assert s['hits'] > 0 and s['cached'] >= trained
    seen = []
    real_empty = cpu_block_cache.empty_cache
    monkeypatch.setattr(cpu_block_cache, 'empty_cache', lambda: (
        seen.append(cache.stats()['cached']), real_empty()))
    bb.eval()
    with torch.no_grad():
        bb(x)
        # emptied once, before the inference forward allocated
        assert seen == [s['cached']]
        bb(x)  # inference again: kept
        assert len(seen) == 1
    assert cache.stats()['cached'] > 0
    _step(bb)  # back to training: the inference blocks unmapped
    assert len(seen) == 2 and seen[1] > 0
    bb.train()
    with torch.no_grad():  # train mode without gradients is inference
        bb(x)
    assert len(seen) == 3


def test_the_hook_installs_on_fp32_cpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_block_cache, 'install', calls.append)
    hook = speedups.BlockCacheOnCPU(True)
    hook(None, (torch.zeros(2, dtype=torch.float64),))
    hook(None, ({'video': torch.zeros(2, dtype=torch.bfloat16)},))
    assert calls == []
    hook(None, ({'video': torch.zeros(2)},))
    hook(None, (torch.zeros(2),))
    assert calls == [cpu_block_cache.DEFAULT_CACHE_MIB]


@pytest.mark.parametrize('bad', [-1, 1.5, '512', [512]])
def test_bad_values_name_the_field(bad):
    with pytest.raises(ValueError, match='speedups.cpu_block_cache'):
        speedups.resolve(dict(cpu_block_cache=bad))


def test_the_decision_is_reported():
    sp = speedups.resolve(dict(preset='cpu', cpu_block_cache=True))
    assert sp['cpu_block_cache'] == cpu_block_cache.DEFAULT_CACHE_MIB == 8192
    runs = sp.decide('cpu')
    assert runs['cpu_block_cache'][0] is True
    assert '8192 MiB' in runs['cpu_block_cache'][1]
    assert sp.decide('cuda')['cpu_block_cache'][0] is False
    assert speedups.resolve('cpu')['cpu_block_cache'] is None


def test_a_failed_build_says_what_is_needed(monkeypatch):
    from torch.utils import cpp_extension

    def fail(**kw):
        raise OSError('c++: not found')
    monkeypatch.setattr(cpp_extension, 'load', fail)
    with pytest.raises(RuntimeError, match='cpu_block_cache.*ninja.*Python.h'):
        cpu_block_cache.extension.__wrapped__()


def test_a_first_use_build_is_announced_and_timed(monkeypatch):
    """The first forward that needs an extension waits for its build: the
    log says which one, and when it is loaded (the log's time stamps show
    the wait)."""
    from mmengine.logging import MMLogger
    from torch.utils import cpp_extension
    from cast_mmaction.models import cpp_extensions
    seen = []
    monkeypatch.setattr(cpp_extension, 'load', lambda **kw: 'module')
    logger = MMLogger.get_current_instance()
    monkeypatch.setattr(logger, 'info', lambda msg, *a, **k: seen.append(msg))
    monkeypatch.setattr(logger, 'log', lambda lvl, msg, *a, **k: seen.append(msg))
    assert cpp_extensions.build('cast_mmaction_x', 'cpu_block_cache.cpp',
                                'model.backbone.speedups.x') == 'module'
    text = '\n'.join(seen)
    assert 'speedups.x: loading the C++ extension cast_mmaction_x' in text
    assert text.endswith('cast_mmaction_x ready')
