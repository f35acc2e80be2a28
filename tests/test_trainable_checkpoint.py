"""Trainable-only checkpoints (TrainableCheckpointHook): saved without the
frozen expert weights, with a pointer to the expert files, and loaded back
by tools/test.py to the same predictions as a full checkpoint."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.engine.trainable_checkpoint import (KEY, fingerprint,
                                                       frozen_state,
                                                       restore_frozen_experts)
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model
from cast_mmaction.safe_load import load_checkpoint
from conftest import ROOT

SIZE = dict(num_classes=4, embed_dim=32, depth=2, num_heads=2, num_frames=4,
            img_size=32)


def _model_cfg(clip, vmae):
    cfg = cast_recognizer_cfg(**SIZE)
    cfg['backbone']['experts']['clip']['pretrained'] = clip
    cfg['backbone']['experts']['vmae']['pretrained'] = vmae
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Expert files, a 1-epoch run with the hook, its trained model."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    root = tmp_path_factory.mktemp('trainable_ckpt')
    data = write_synthetic_video_dataset(str(root / 'data'),
                                         num_train_per_class=2,
                                         num_val_per_class=1, num_frames=4,
                                         size=32)
    torch.manual_seed(3)  # "pretrained" experts: random, saved as files
    src = build_model(cast_recognizer_cfg(**SIZE))
    clip, vmae = str(root / 'clip.pth'), str(root / 'vmae.pth')
    torch.save(src.backbone.experts['clip'].state_dict(), clip)
    torch.save(src.backbone.experts['vmae'].state_dict(), vmae)
    pipeline = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=1,
             test_mode=True),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]

    def loader(ann):
        return dict(batch_size=2, num_workers=0, persistent_workers=False,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    dataset=dict(type='VideoDataset', ann_file=ann,
                                 data_prefix=dict(video=data['root']),
                                 pipeline=pipeline, test_mode=True))

    cfg_file = root / 'tiny.py'
    cfg_file.write_text(textwrap.dedent(f'''
        _base_ = [{os.path.join(ROOT, 'configs', '_base_',
                                'default_runtime.py')!r}]
        model = {_model_cfg(clip, vmae)!r}
        train_dataloader = {loader(data['train_ann'])!r}
        test_dataloader = {loader(data['val_ann'])!r}
        test_evaluator = dict(type='AccMetric')
        test_cfg = dict(type='TestLoop')
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
        val_cfg = val_dataloader = val_evaluator = None
        optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-2))
        default_hooks = dict(checkpoint=dict(interval=1, save_best=None))
        custom_hooks = [dict(type='ParameterCountHook'),
                        dict(type='TrainableCheckpointHook')]
        '''))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(root / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    full = str(root / 'full.pth')
    torch.save(dict(meta={}, state_dict=model.state_dict()), full)
    return dict(root=root, cfg=str(cfg_file), model=model, clip=clip,
                vmae=vmae, full=full,
                ckpt=os.path.join(cfg.work_dir, 'epoch_1.pth'))


def _load(path):
    return load_checkpoint(path)


def test_checkpoint_holds_only_what_trains(trained):
    ckpt = _load(trained['ckpt'])
    model = trained['model']
    sd = ckpt['state_dict']
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable <= set(sd)
    assert not frozen & set(sd)
    assert all(n.startswith('backbone.experts.') for n in frozen)
    # the pointer: each expert's file and a fingerprint of its weights
    rec = ckpt[KEY]
    assert set(rec) == {'clip', 'vmae'}
    assert rec['clip']['pretrained'] == trained['clip']
    assert rec['vmae']['pretrained'] == trained['vmae']
    assert rec['clip']['fingerprint'] == fingerprint(
        frozen_state(model.backbone.experts['clip']))
    assert sum(r['num_params'] for r in rec.values()) == sum(
        model.get_parameter(n).numel() for n in frozen)
    # optimizer state for the trainable parameters only
    states = ckpt['optimizer']['state']
    assert len(states) == len(trainable)
    weights = sum(t.numel() * t.element_size() for t in sd.values())
    assert weights == 4 * sum(model.get_parameter(n).numel()
                              for n in trainable)


def _test_tool(trained, ckpt, name):
    dump = str(trained['root'] / f'{name}.pkl')
    r = subprocess.run(
        [sys.executable, 'tools/test.py', trained['cfg'], ckpt,
         '--work-dir', str(trained['root'] / f'test_{name}'), '--dump',
         dump], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    with open(dump, 'rb') as f:
        return pickle.load(f), r.stdout + r.stderr


def test_tools_test_loads_it_to_the_full_checkpoint_predictions(trained):
    stripped, log = _test_tool(trained, trained['ckpt'], 'stripped')
    assert 'restored from their pretrained files' in log
    full, _ = _test_tool(trained, trained['full'], 'full')
    assert len(stripped) == len(full) > 0
    for a, b in zip(stripped, full):
        torch.testing.assert_close(torch.as_tensor(a['pred_score']),
                                   torch.as_tensor(b['pred_score']),
                                   rtol=0, atol=0)


def _fresh_model(trained):
    return build_model(_model_cfg(trained['clip'], trained['vmae']))


def test_restore_gives_the_trained_weights(trained):
    ckpt = _load(trained['ckpt'])
    model = _fresh_model(trained)  # no init_weights: random frozen experts
    assert restore_frozen_experts(model, ckpt) == ['clip', 'vmae']
    model.load_state_dict(ckpt['state_dict'], strict=True)
    for (n, p), (_, q) in zip(model.state_dict().items(),
                              trained['model'].state_dict().items()):
        assert torch.equal(p, q), n
    # a full checkpoint is left alone
    full = _load(trained['full'])
    assert restore_frozen_experts(model, full) == []


def test_changed_expert_file_is_refused(trained, tmp_path):
    ckpt = _load(trained['ckpt'])
    other = build_model(cast_recognizer_cfg(**SIZE))
    path = tmp_path / 'vmae_other.pth'
    torch.save(other.backbone.experts['vmae'].state_dict(), path)
    ckpt[KEY]['vmae']['pretrained'] = str(path)
    with pytest.raises(ValueError, match='differ from those the checkpoint'):
        restore_frozen_experts(_fresh_model(trained), ckpt)


def test_moved_expert_file_names_the_config_field(trained, tmp_path):
    ckpt = _load(trained['ckpt'])
    ckpt[KEY]['clip']['pretrained'] = str(tmp_path / 'gone.pth')
    model = _fresh_model(trained)
    model.backbone.experts['clip'].pretrained = str(tmp_path / 'gone2.pth')
    with pytest.raises(FileNotFoundError,
                       match=r'model\.backbone\.experts\.clip\.pretrained'):
        restore_frozen_experts(model, ckpt)
    # the config's path is used when the recorded one has moved
    model.backbone.experts['clip'].pretrained = trained['clip']
    assert 'clip' in restore_frozen_experts(model, ckpt)
