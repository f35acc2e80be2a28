"""What the block cache holds across a switch from training to validation:
peak and current RSS of a process that runs two training steps of CAST ViT-B
SSv2 at batch 2 (``'fusion'`` + ``cpu_block_cache=True``, 2 threads) and then
one validation forward of 6 views (SSv2's 2 clips x 3 crops), one process per
mode:

    PYTHONPATH=$PWD python benchmarks/scripts/block_cache_train_then_val.py empty
    PYTHONPATH=$PWD python benchmarks/scripts/block_cache_train_then_val.py keep

``empty``: as the speed-up runs (the cache emptied when the backbone switches
from training to inference); ``keep``: ``empty_cache`` replaced by a no-op,
so the training step's cached blocks stay through validation.
"""
import sys, resource, torch, time
torch.set_num_threads(2)
from mmengine.config import Config
import cast_mmaction
from cast_mmaction.utils import build_model
from cast_mmaction.models import cpu_block_cache
from mmaction.structures import ActionDataSample
if sys.argv[1] == 'keep':
    cpu_block_cache.empty_cache = lambda: None
cfg = Config.fromfile('configs/cast_ssv2.py').model.to_dict()
for e in cfg['backbone']['experts'].values(): e['pretrained'] = None
cfg['backbone']['speedups'] = dict(preset='cpu', checkpoint='fusion', cpu_block_cache=True)
model = build_model(cfg)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
def cur():
    s = open('/proc/self/status').read(); return int(s.split('VmRSS:')[1].split()[0]) / 2**20
x = torch.randn(2, 1, 3, 16, 224, 224)
for _ in range(2):
    model.train()
    l = model(x, [ActionDataSample().set_gt_label(1) for _ in range(2)], mode='loss')
    sum(v for k, v in l.items() if 'loss' in k).backward(); opt.step(); model.zero_grad(set_to_none=True)
print(sys.argv[1], 'after training: peak %.3f GiB, now %.3f GiB, cached %.3f GiB' % (rss(), cur(), cpu_block_cache.stats()['cached'] / 2**30), flush=True)
model.eval()
with torch.no_grad():
    v = torch.randn(6, 3, 16, 224, 224)
    model.backbone(v)
print(sys.argv[1], 'after validation: peak %.3f GiB, now %.3f GiB, cached %.3f GiB' % (rss(), cur(), cpu_block_cache.stats()['cached'] / 2**30), flush=True)
