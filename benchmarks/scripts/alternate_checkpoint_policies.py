"""Training-step time of CAST ViT-B SSv2 (batch 1, fp32, random weights) with
checkpoint policies alternated in one process: wall and process CPU time per
step (forward, backward and the config's fused AdamW step, as tools/benchmark.py
builds it) (one torch thread by default, THREADS=n to change; BATCH=n for the batch
size, default 1), with the load average.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_checkpoint_policies.py \\
        ROUNDS none,selective,narrow,attention,full

A policy name with the suffix ``+mmap`` (e.g. ``fusion_qkv+mmap``) runs that
step with glibc's ``M_MMAP_THRESHOLD`` at 1 MiB (every tensor of 1 MiB or more
is mmapped and returned to the system when freed, what
``MALLOC_MMAP_THRESHOLD_=1048576`` does for a whole process), ``+mmapN`` at N
MiB; the other steps run with it at 32 MiB (glibc's largest dynamic threshold
on 64-bit). The suffix ``+trim`` adds the speed-up ``malloc_trim``
(``malloc_trim(0)`` after the last two thirds' forward and the last third's
backward, models/speedups.py; ``+ftrim``: every layer's forward only,
``+atrim``: every layer's backward too; ``+ltrimN``: the forward's trims
after the last N layers only, ``+ltrim12`` the earlier rule at ViT-B depth);
``+cacheN`` installs the speed-up ``cpu_block_cache`` keeping N MiB of free
blocks (``+cache``: ``True``'s limit). Suffixes combine: ``fusion+trim+mmap8``.

Each line ends with the process's peak resident set so far, the timed
step's minor page faults (``minflt``: pages the kernel mapped in, zeroed
for anonymous memory) and, with the block cache, its hits / misses / unmaps
in that step; the warm-up
step runs the first setting, so a run of one setting prints its own peak.

``ORDER=abba`` runs the settings in reverse order every other round (a, b,
then b, a), so that neither always follows the other.

``WARM=n`` runs n untimed steps of a setting before its timed one: a step's
time depends on what the step before it left in the heap (a step after one
that gave pages back to the system faults them in again), so with ``WARM=1``
every timed step follows a step of its own setting.
"""
import sys, time, os, resource, torch
torch.set_num_threads(int(os.environ.get('THREADS','1')))
from mmengine.config import Config
import cast_mmaction
from cast_mmaction.utils import build_model
from cast_mmaction.models.checkpointing import (FUSION_POLICIES, FusionPolicy,
                                                make_fusion_policy, make_policy)
from cast_mmaction.models import cpu_block_cache
from cast_mmaction.models.speedups import (BlockCacheOnCPU,
                                           FusionCheckpointRunner,
                                           TrimmingRunner,
                                           set_malloc_mmap_threshold)
cfg = Config.fromfile('configs/cast_ssv2.py')
m = cfg.model.to_dict(); bb=m['backbone']
bb['speedups'] = 'cpu'  # the frozen MLP node, oneDNN by the CPU's facts
for e in bb['experts'].values(): e['pretrained']=None
model = build_model(m).train()
sys.path.insert(0, 'tools')
from benchmark import build_optimizer_ours
opt = build_optimizer_ours(cfg, model)
B = int(os.environ.get('BATCH','1'))
x = torch.randn(B,3,16,224,224)
from mmaction.structures import ActionDataSample
pols = sys.argv[2].split(',')
def step():
    f=resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t=time.perf_counter(); c=time.process_time()
    l = model(x[:,None],[ActionDataSample().set_gt_label(1) for _ in range(B)],mode='loss')
    sum(v for k,v in l.items() if 'loss' in k).backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    step.minflt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
    return time.perf_counter()-t, time.process_time()-c
bbm = model.backbone
# one part of 'fusion' alone, or the earlier 'fusion' that recomputed the
# links' window attention ('fusion' itself keeps it)
PARTS = {'fusion_links': FusionPolicy(adapters=False),
         'fusion_adapters': FusionPolicy(links=False),
         'fusion_keepattn': FusionPolicy(link_attention=True),
         'fusion_recompute': FusionPolicy()}
HOOKS = []


def use(p):
    """Install the policy / allocator setting ``p``."""
    name, *suffixes = p.split('+')
    mmap = next((int(f[4:] or 1) for f in suffixes
                 if f.startswith('mmap')), 32)
    fusion = name in FUSION_POLICIES or name in PARTS
    bbm.layer_runner = FusionCheckpointRunner(
        PARTS.get(name) or make_fusion_policy(name),
        range(bbm.depth)) if fusion else None
    if 'trim' in suffixes:
        bbm.layer_runner = TrimmingRunner(bbm.layer_runner)
    if 'ftrim' in suffixes:  # every layer's forward only
        bbm.layer_runner = TrimmingRunner(bbm.layer_runner,
                                          backward_layers=0,
                                          forward_layers=bbm.depth)
    for f in suffixes:  # ltrimN: forward trims after the last N layers only
        if f.startswith('ltrim'):
            bbm.layer_runner = TrimmingRunner(
                bbm.layer_runner, forward_layers=int(f[5:] or 1))
    if 'atrim' in suffixes:  # forward and every layer's backward
        bbm.layer_runner = TrimmingRunner(bbm.layer_runner,
                                          backward_layers=bbm.depth)
    bbm.cp_layers = set() if name=='none' or fusion else set(range(bbm.depth))
    bbm.cp_policy = None if name in ('none','full') or fusion else make_policy(name)
    set_malloc_mmap_threshold(mmap << 20)
    cache = next((int(f[5:] or cpu_block_cache.DEFAULT_CACHE_MIB)
                  for f in suffixes
                  if f.startswith('cache')), None)
    for h in HOOKS:
        h.remove()
    HOOKS.clear()
    cpu_block_cache.uninstall()
    cpu_block_cache.empty_cache()
    if cache is not None:  # the speed-up's hook, as apply_speedups adds it
        hook = BlockCacheOnCPU(cache)
        HOOKS.append(bbm.register_forward_pre_hook(hook))


def cache_counts(last={}):
    """The block cache's hits / misses / unmaps since the last call."""
    st = cpu_block_cache.stats()
    if not st.get('installed'):
        return ''
    out = ' '.join(f'{k} {st[k] - last.get(k, 0)}'
                   for k in ('hits', 'misses', 'unmaps'))
    last.update(st)
    return 'cache: ' + out


# warm-up with the first setting (the optimizer state is allocated here), so
# that with one setting the printed maxrss is that setting's peak
use(pols[0])
step()
ABBA = os.environ.get('ORDER', '') == 'abba'
for r in range(int(sys.argv[1])):
    for p in (pols[::-1] if ABBA and r % 2 else pols):
        use(p)
        for _ in range(int(os.environ.get('WARM', '0'))):
            step()  # untimed: the timed step follows a step of its own kind
        cache_counts()  # the counts below are the timed step's
        dt = step()
        print(r, p, 'wall %.2f cpu %.2f' % dt, 'load', os.getloadavg()[0],
              'maxrss %.2f GB' % (resource.getrusage(resource.RUSAGE_SELF)
                                  .ru_maxrss / 2 ** 20),
              'minflt', step.minflt, cache_counts(), flush=True)
