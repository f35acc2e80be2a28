"""Training-step time of CAST ViT-B SSv2 (batch 1, fp32, random weights) with
checkpoint policies alternated in one process: wall and process CPU time per
step (one torch thread by default, THREADS=n to change; BATCH=n for the batch
size, default 1), with the load average.

    PYTHONPATH=$PWD python docs/benchmark_runs/alternate_checkpoint_policies.py \\
        ROUNDS none,selective,narrow,attention,full
"""
import sys, time, os, torch
torch.set_num_threads(int(os.environ.get('THREADS','1')))
from mmengine.config import Config
import cast_mmaction
from cast_mmaction.utils import build_model
from cast_mmaction.models.checkpointing import make_policy
cfg = Config.fromfile('configs/cast_ssv2.py')
m = cfg.model.to_dict(); bb=m['backbone']
for e in bb['experts'].values(): e['pretrained']=None
model = build_model(m).train()
B = int(os.environ.get('BATCH','1'))
x = torch.randn(B,3,16,224,224)
from mmaction.structures import ActionDataSample
pols = sys.argv[2].split(',')
def step():
    t=time.perf_counter(); c=time.process_time()
    l = model(x[:,None],[ActionDataSample().set_gt_label(1) for _ in range(B)],mode='loss')
    sum(v for k,v in l.items() if 'loss' in k).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter()-t, time.process_time()-c
bbm = model.backbone
for r in range(int(sys.argv[1])):
    for p in pols:
        bbm.cp_layers = set() if p=='none' else set(range(bbm.depth))
        bbm.cp_policy = None if p in ('none','full') else make_policy(p)
        dt = step()
        print(r, p, 'wall %.2f cpu %.2f' % dt, 'load', os.getloadavg()[0], flush=True)
