#!/usr/bin/env bash
# tools/train.py with and without --cuda-graph on the demo recipe
# (configs/cast_demo.py: real mp4 files, decoded with PyAV, validation every
# epoch, checkpoints, the lr schedule), on a GPU, in one short device call:
#
#   benchmarks/scripts/gpu_graph_demo.sh OUT_DIR [EPOCHS]
#
# Writes graph_demo.log: both runs' logs, the mean iteration time of each
# (MMEngine's `time`, after the first epoch) and whether the last
# checkpoints' weights are bit-identical. Needs PyAV (the demo's files are
# written and read with it).
set -u
OUT=${1:?usage: benchmarks/scripts/gpu_graph_demo.sh OUT_DIR [EPOCHS]}
EPOCHS=${2:-3}
PY=${PYTHON:-python3}
. "$(dirname "$0")/timed_parts.sh"
open_log "$OUT" graph_demo.log
need_openmmlab
DATA=$(mktemp -d)
WORK=$(mktemp -d)
part data 60 "$PY" tools/data/make_synthetic_data.py "$DATA" \
    --train-per-class 24 --val-per-class 6
OPTS=(data_root="$DATA" data_root_val="$DATA"
      train_dataloader.dataset.ann_file="$DATA/train_list.txt"
      val_dataloader.dataset.ann_file="$DATA/val_list.txt"
      train_dataloader.dataset.data_prefix.video="$DATA"
      val_dataloader.dataset.data_prefix.video="$DATA"
      train_dataloader.dataset.pipeline.0.type=PyAVInit
      train_dataloader.dataset.pipeline.2.type=PyAVDecode
      val_dataloader.dataset.pipeline.0.type=PyAVInit
      val_dataloader.dataset.pipeline.2.type=PyAVDecode
      train_cfg.max_epochs="$EPOCHS" train_cfg.val_begin=1)
for mode in eager graph; do
    flag=(); [ "$mode" = graph ] && flag=(--cuda-graph)
    part "train_$mode" 90 "$PY" tools/train.py configs/cast_demo.py \
        --work-dir "$WORK/$mode" --seed 0 --no-check "${flag[@]}" \
        --cfg-options "${OPTS[@]}"
done
part compare 30 "$PY" - "$WORK" "$EPOCHS" <<'PYEOF'
import glob, json, sys
import torch
from cast_mmaction.safe_load import load_checkpoint
work, epochs = sys.argv[1], int(sys.argv[2])
sd = {}
for mode in ('eager', 'graph'):
    ck = load_checkpoint(f'{work}/{mode}/epoch_{epochs}.pth')
    sd[mode] = ck['state_dict']
    times = []
    for path in glob.glob(f'{work}/{mode}/*/vis_data/*.json'):
        for line in open(path):
            r = json.loads(line)
            if 'time' in r and r.get('epoch', 1) > 1:
                times.append(r['time'])
    acc = [json.loads(l) for p in glob.glob(f'{work}/{mode}/*/vis_data/*.json')
           for l in open(p) if 'acc/top1' in l]
    print(mode, 'mean iteration time after epoch 1 (s):',
          sum(times) / max(len(times), 1), 'records', len(times),
          'val:', [a.get('acc/top1') for a in acc])
same = all(torch.equal(sd['eager'][k], sd['graph'][k]) for k in sd['eager'])
diff = max((sd['eager'][k].float() - sd['graph'][k].float()).abs().max().item()
           for k in sd['eager'] if sd['eager'][k].is_floating_point())
print('weights bit-identical:', same, 'max abs diff:', diff)
PYEOF
rm -rf "$DATA"
exit "$FAILED"
