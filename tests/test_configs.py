"""The shipped configs: they parse, their pipelines run, the recipes hold
the published values, and missing paths are reported by field."""
import copy
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

from _config_pins import differences, load_pins, recipes, resolve
from cast_mmaction.engine.checks import (MissingPathError, check_paths,
                                         required_paths)
from cast_mmaction.models.presets import cast_backbone_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')


def load(name):
    return Config.fromfile(osp.join(CONFIGS, name))


def plain(obj):
    """ConfigDict / tuples -> plain dicts / lists, for comparisons."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def step(pipeline, type_name):
    hits = [s for s in pipeline if s['type'] == type_name]
    return hits[0] if hits else None


@pytest.mark.parametrize('name', ['cast_ssv2.py', 'cast_k400.py',
                                  'cast_demo.py'])
def test_parses_with_runtime_and_plugin(name):
    cfg = load(name)
    assert cfg.default_scope == 'mmaction'
    assert plain(cfg.custom_imports) == dict(imports=['cast_mmaction'],
                                             allow_failed_imports=False)
    ckpt = cfg.default_hooks.checkpoint
    # MMEngine's CheckpointHook with atomic writes (docs/reliability.md)
    assert ckpt.type == 'AtomicCheckpointHook' and ckpt.max_keep_ckpts >= 1
    for key in ('data_root', 'data_root_val', 'ann_file_train',
                'ann_file_val', 'ann_file_test', 'clip_weights',
                'vmae_weights'):
        assert key in cfg, f'{name}: top-level field {key} missing'
    assert cfg.train_dataloader.dataset.ann_file == cfg.ann_file_train
    assert cfg.test_dataloader.dataset.ann_file == cfg.ann_file_test
    assert cfg.model.backbone.experts.clip.pretrained == cfg.clip_weights
    assert cfg.model.backbone.experts.vmae.pretrained == cfg.vmae_weights


# the published recipes (REFERENCE.md "Recipes", the authors' scripts)
RECIPES = {
    'cast_ssv2.py': dict(num_classes=174, epochs=50, update_freq=4,
                         drop_path=0.3, mixup_prob=0.9, clips=2, crops=3,
                         flip=False, lr=1e-3 * 16 * 6 * 4 / 256),
    'cast_k400.py': dict(num_classes=400, epochs=70, update_freq=6,
                         drop_path=0.2, mixup_prob=0.5, clips=5, crops=3,
                         flip=True, lr=1e-3 * 16 * 6 * 6 / 256),
}


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_published_recipe_values(name):
    r = RECIPES[name]
    cfg = load(name)
    # model: the ViT-B CAST of presets.cast_backbone_cfg()
    expect = cast_backbone_cfg(drop_path_rate=r['drop_path'],
                               clip_pretrained=cfg.clip_weights,
                               vmae_pretrained=cfg.vmae_weights)
    # plus the CPU speed-ups, which leave the model the reference on a GPU
    expect['speedups'] = dict(preset='cpu')
    assert plain(cfg.model.backbone) == plain(expect)
    head = cfg.model.cls_head
    assert (head.type, head.num_classes, head.in_channels) == (
        'CASTHead', r['num_classes'], 768)
    assert head.label_smooth_eps == 0.1 and head.average_clips == 'prob'
    pre = cfg.model.data_preprocessor
    assert pre.mean == [123.675, 116.28, 103.53]
    assert pre.std == [58.395, 57.12, 57.375]
    blend = pre.blending
    assert blend.type == 'RandomBatchAugment'
    mix, cut = blend.augments
    assert (mix.type, mix.alpha, cut.type, cut.alpha) == (
        'MixupBlending', 0.8, 'CutmixBlending', 1.0)
    # the scripts pass --mixup_switch_prob 0: a mixed batch is mixup
    assert blend.probs == pytest.approx([r['mixup_prob'], 0.0])
    # optimiser
    ow = cfg.optim_wrapper
    assert ow.type == 'GuardedAmpOptimWrapper'  # AMP + non-finite guard
    assert ow.accumulative_counts == r['update_freq']
    opt = ow.optimizer
    assert opt.type == 'AdamW' and tuple(opt.betas) == (0.9, 0.999)
    assert opt.weight_decay == 0.05 and opt.eps == 1e-8
    assert opt.lr == pytest.approx(r['lr'])
    assert cfg.train_dataloader.batch_size == 6
    assert ow.constructor == 'CASTLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.layer_decay_rate == 0.75
    assert cfg.train_cfg.max_epochs == r['epochs']
    (sched, ) = cfg.param_scheduler  # the authors' warm-up + cosine
    assert (sched.type, sched.warmup_epochs, sched.start_factor,
            sched.end) == ('LinearWarmupCosineLR', 5, 0.0, r['epochs'])
    # pipelines: RandAugment m7 n4, RRC, flip only for K400
    train = cfg.train_dataloader.dataset.pipeline
    ra = step(train, 'VideoRandAugment')
    assert ra.config_str == 'rand-m7-n4-mstd0.5-inc1'
    rrc = step(train, 'RandomResizedCrop')
    assert tuple(rrc.area_range) == (0.08, 1.0)
    assert tuple(rrc.aspect_ratio_range) == (0.75, 1.3333)
    assert (step(train, 'Flip') is not None) == r['flip']
    test = cfg.test_dataloader.dataset.pipeline
    sampler = test[1]
    assert sampler.num_clips == r['clips'] and sampler.test_mode
    assert step(test, 'ThreeCrop').crop_size == 224
    assert step(test, 'Resize').scale == (-1, 224)


def _recipe_preset(name, cfg):
    """The preset (built from configs/_base_/models/) that recipe ``name``
    should equal, given the recipe's own weights and regularisation."""
    from cast_mmaction.models.presets_av import (ca2st_backbone_cfg,
                                                 cava_backbone_cfg)
    bb = cfg.model.backbone
    experts = bb.experts
    common = dict(num_frames=bb.num_frames,
                  drop_path_rate=bb.drop_path_rate)
    if name.startswith('cast_'):
        return cast_backbone_cfg(clip_pretrained=cfg.clip_weights,
                                 vmae_pretrained=cfg.vmae_weights, **common)
    audio = dict(input_tdim=experts.audio.input_tdim,
                 ast_pretrained=cfg.ast_weights,
                 clip_pretrained=cfg.clip_weights, **common)
    if name.startswith('cava_'):
        return cava_backbone_cfg(**audio)
    return ca2st_backbone_cfg(vmae_pretrained=cfg.vmae_weights, **audio)


@pytest.mark.parametrize('name', ['cast_ssv2.py', 'cast_k400.py',
                                  'cast_ek100.py', 'cava_vggsound.py',
                                  'cava_epic_sounds.py', 'ca2st_vggsound.py',
                                  'ca2st_ek100.py'])
def test_recipes_use_the_one_model_definition(name):
    """Every full-size recipe's backbone is the model of its
    configs/_base_/models/ file (what the presets build), expert stream order
    included. The recipes add the CPU speed-ups (a no-op on a GPU)."""
    cfg = load(name)
    expect = _recipe_preset(name, cfg)
    expect['speedups'] = dict(preset='cpu')
    got = plain(cfg.model.backbone)
    got_links = [dict(link, layers=link.get('layers')) for link in
                 got.pop('links')]
    want = plain(expect)
    want_links = [dict(link, layers=link.get('layers')) for link in
                  want.pop('links')]
    assert got == want
    assert got_links == want_links
    assert list(cfg.model.backbone.experts) == list(expect['experts'])


def test_old_clip_size_names_are_gone_from_the_configs():
    import glob
    for path in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True):
        cfg = Config.fromfile(path)
        if 'model' not in cfg:
            continue  # runtime / strategy bases
        for e in cfg.model.backbone.get('experts', {}).values():
            assert not {'width', 'layers', 'heads'} & set(e), path


def test_sampling_ssv2_segments_k400_dense():
    ssv2, k400 = load('cast_ssv2.py'), load('cast_k400.py')
    s = ssv2.train_dataloader.dataset.pipeline[1]
    assert (s.type, s.num_segments) == ('SegmentSample', 16)
    k = k400.train_dataloader.dataset.pipeline[1]
    assert (k.type, k.clip_len, k.frame_interval) == ('DenseSpanSample', 16,
                                                      4)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_lr_schedule_warmup_then_cosine_per_group():
    """5 warm-up epochs from 0 to the base lr, cosine to base x 1e-3 (1e-6
    x total_batch / 256) in every layer-decay group; the lr advances once
    per optimizer step (accumulative_counts micro-batches)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    cfg = load('cast_ssv2.py')
    model = build_model(cast_recognizer_cfg(
        num_classes=4, embed_dim=32, depth=1, num_heads=2, num_frames=4,
        img_size=32))
    ow = dict(plain(cfg.optim_wrapper), type='OptimWrapper')
    ow.pop('loss_scale')
    wrapper = build_optim_wrapper(model, ow)
    iters = 4 * cfg.optim_wrapper.accumulative_counts  # 4 steps / epoch
    scheds = [PARAM_SCHEDULERS.build(
        dict(plain(s)), default_args=dict(optimizer=wrapper,
                                          epoch_length=iters))
        for s in cfg.param_scheduler]
    base = [g['initial_lr'] for g in wrapper.optimizer.param_groups]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * iters):
        lrs.append([g['lr'] for g in wrapper.optimizer.param_groups])
        for s in scheds:
            s.step()
    lrs = np.array(lrs)
    assert np.all(lrs[0] == 0.0)  # the authors warm up from exactly 0
    assert lrs[5 * iters - 1] == pytest.approx(base)  # end of warm-up
    assert lrs[5 * iters] == pytest.approx(base)  # start of the cosine
    # the last optimizer step: one step before the end of the cosine
    last = 1e-3 + (1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * 179 / 180))
    assert lrs[-1] == pytest.approx(np.array(base) * last)
    assert np.all(np.diff(lrs[5 * iters:, 0]) <= 1e-12)  # cosine decay
    assert base[0] == pytest.approx(1.5e-3)


def _tiny_video(path, frames=40, size=64):
    from cast_mmaction.datasets.synthetic import render_clip, write_mp4
    write_mp4(path, render_clip(np.random.default_rng(0), 0, 0, frames,
                                size))


@pytest.mark.parametrize('name', ['cast_ssv2.py', 'cast_k400.py',
                                  'cast_demo.py'])
def test_pipelines_build_and_run(tmp_path, name):
    from mmengine.dataset import Compose
    cfg = load(name)
    video = str(tmp_path / 'v.mp4')
    frames = 80 if name == 'cast_k400.py' else 24
    _tiny_video(video, frames=frames)
    size = cfg.get('img_size', 224)
    nf = cfg.num_frames
    for loader, views in (('train_dataloader', 1), ('val_dataloader', 1),
                          ('test_dataloader', None)):
        pipe = Compose(copy.deepcopy(cfg[loader].dataset.pipeline))
        np.random.seed(0)
        out = pipe(dict(filename=video, label=1, start_index=0,
                        modality='RGB'))
        x = out['inputs']
        if views is None:
            test = cfg.test_dataloader.dataset.pipeline
            clips = test[1].get('num_clips', 1)
            crops = 3 if step(test, 'ThreeCrop') else 1
            views = clips * crops
        assert tuple(x.shape) == (views, 3, nf, size, size), (loader, x.shape)
        assert x.dtype == torch.uint8
        assert int(out['data_samples'].gt_label) == 1


def test_ssv2_test_views_are_segment_starts_and_middles():
    from cast_mmaction.datasets.transforms.sampling import SegmentSample
    out = SegmentSample(16, num_clips=2, test_mode=True)(
        dict(total_frames=64, start_index=0))
    inds = out['frame_inds']
    np.testing.assert_array_equal(inds[:16], np.arange(16) * 4)
    np.testing.assert_array_equal(inds[16:], np.arange(16) * 4 + 2)
    np.random.seed(0)
    train = SegmentSample(16)(dict(total_frames=64, start_index=0))
    seg = train['frame_inds'] // 4
    np.testing.assert_array_equal(seg, np.arange(16))  # one per segment
    short = SegmentSample(16)(dict(total_frames=5, start_index=0))
    assert short['frame_inds'].max() < 5
    assert np.all(np.diff(short['frame_inds']) >= 0)


def test_data_preprocessor_mixes_batches():
    """The recipe's preprocessor normalises and, in training, turns the
    labels into mixed soft labels (mixup) in about 90% of the batches."""
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    cfg = load('cast_ssv2.py')
    pre = MODELS.build(cfg.model.data_preprocessor)
    assert cfg.model.data_preprocessor.blending.probs == [0.9, 0.0]
    pre.train()
    np.random.seed(0)
    torch.manual_seed(0)
    soft = 0
    for _ in range(20):
        imgs = [torch.randint(0, 255, (1, 3, 2, 8, 8), dtype=torch.uint8)
                for _ in range(4)]
        samples = [ActionDataSample().set_gt_label(i % 3) for i in range(4)]
        out = pre(dict(inputs=imgs, data_samples=samples), training=True)
        assert out['inputs'].shape == (4, 1, 3, 2, 8, 8)
        assert out['inputs'].dtype == torch.float32
        label = out['data_samples'][0].gt_label
        if label.numel() == 174:
            assert float(label.sum()) == pytest.approx(1.0)
            soft += 1
    assert 14 <= soft <= 20


def test_missing_paths_name_the_fields(tmp_path):
    cfg = load('cast_ssv2.py')
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'train', config_name='configs/cast_ssv2.py')
    msg = str(e.value)
    for field in ('ann_file_train', 'train_dataloader.dataset.ann_file',
                  'data_root', 'ann_file_val', 'clip_weights',
                  'model.backbone.experts.clip.pretrained', 'vmae_weights',
                  'model.backbone.experts.vmae.pretrained'):
        assert field in msg, field
    assert "'checkpoints/ViT-B-16.pt'" in msg
    # the data paths are set in the shared dataset file, not in the recipe
    assert 'configs/_base_/datasets/' in msg and 'docs/training.md' in msg
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'test', checkpoint='nope.pth')
    msg = str(e.value)
    assert 'CHECKPOINT' in msg and 'nope.pth' in msg
    assert 'ann_file_test' in msg and 'clip_weights' not in msg


def test_missing_resume_checkpoint_names_the_argument(tmp_path):
    """tools/train.py --resume PATH sets load_from: a missing PATH is named
    as --resume, without the config / --cfg-options load_from hint; a
    missing load_from of the config is named once."""
    cfg = load('cast_ssv2.py')
    cfg.resume, cfg.load_from = True, '/nope/epoch_3.pth'
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'train', resume='/nope/epoch_3.pth')
    msg = str(e.value)
    assert ("  --resume (argument of tools/train.py) = '/nope/epoch_3.pth': "
            "file not found") in msg
    assert 'load_from' not in msg
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'train')
    assert "\n  load_from = '/nope/epoch_3.pth': file not found" in \
        str(e.value)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(CONFIGS, 'cast_k400.py'), '--work-dir', str(tmp_path / 'w'),
         '--resume', str(tmp_path / 'missing.pth')], cwd=str(tmp_path),
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert (f"--resume (argument of tools/train.py) = "
            f"'{tmp_path / 'missing.pth'}': file not found") in proc.stderr
    assert 'load_from' not in proc.stderr


def test_resuming_from_a_weights_only_file_is_a_named_error(tmp_path):
    """``resume=True`` with a file that holds no training state (a converted
    official checkpoint, a .safetensors export) stops before the runner is
    built, naming what the file lacks and how to start from its weights
    (MMEngine's Runner.resume died with a bare KeyError: 'epoch' /
    'message_hub'); a training checkpoint, a folder (FSDP2's sharded
    checkpoint) and resume=False pass."""
    from _tools import load_tool
    from cast_mmaction.engine.checks import NotResumableError, check_resumable
    from cast_mmaction.safe_load import save_safetensors
    weights = {'state_dict': {'w': torch.zeros(2)},
               'meta': dict(kind='cast', converted_from='x.pth')}
    converted = str(tmp_path / 'converted.pth')
    torch.save(weights, converted)
    exported = str(tmp_path / 'exported.safetensors')
    save_safetensors(weights, exported)
    trained = str(tmp_path / 'epoch_1.pth')
    torch.save(dict(weights, meta=dict(epoch=1, iter=10), optimizer={},
                    message_hub=dict(log_scalars={})), trained)
    cfg = Config(dict(resume=True, load_from=converted))
    with pytest.raises(NotResumableError) as e:
        check_resumable(cfg)
    assert str(e.value).startswith(f'load_from {converted}: not a training '
                                   f'checkpoint (it lacks meta.epoch, '
                                   f'meta.iter, message_hub')
    assert f'--cfg-options load_from={converted}' in str(e.value)
    cfg.load_from = exported
    with pytest.raises(NotResumableError, match='a .safetensors file holds '
                       'weights only'):
        check_resumable(cfg, '--resume')
    for load_from, resume in ((trained, True), (converted, False),
                              (str(tmp_path), True), (None, True)):
        check_resumable(Config(dict(resume=resume, load_from=load_from)))
    # tools/train.py: the one-line exit, before anything is built
    config = tmp_path / 'tiny.py'
    config.write_text('model = dict(type="Recognizer3D")\n'
                      'train_dataloader = None\n')
    with pytest.raises(SystemExit) as e:
        load_tool('train').main([str(config), '--work-dir',
                                 str(tmp_path / 'w'), '--resume', converted])
    assert str(e.value.code).startswith(f'NotResumableError: --resume '
                                        f'{converted}: not a training')


def test_the_startup_hook_refuses_to_resume_a_weights_only_file():
    """Under MMAction2's tools or a plain Runner.from_cfg (no tools/train.py
    check): StartupCheckHook, called by Runner.resume before it reads
    meta['epoch'], names what the file lacks (a bare KeyError there); the
    same file is fine as load_from (fine-tuning) and a training checkpoint
    resumes."""
    import types

    from mmengine.runner import BaseLoop

    from cast_mmaction.engine.checks import NotResumableError
    from cast_mmaction.engine.hooks import StartupCheckHook

    class Loop(BaseLoop):
        def run(self):
            pass

    model = torch.nn.Linear(2, 2)
    weights = {'state_dict': model.state_dict(), 'meta': {}}
    runner = types.SimpleNamespace(model=model, _resume=True,
                                   _train_loop=object.__new__(Loop),
                                   _load_from='w.pth', work_dir='.')
    hook = StartupCheckHook()
    with pytest.raises(NotResumableError, match=r"the checkpoint to resume "
                       r"w.pth: not a training checkpoint \(it lacks "
                       r"meta.epoch, meta.iter, message_hub"):
        hook.after_load_checkpoint(runner, weights)
    runner._resume = False
    hook.after_load_checkpoint(runner, weights)  # load_from: fine
    runner._resume = True
    hook.after_load_checkpoint(runner, dict(
        weights, meta=dict(epoch=1, iter=4), message_hub={}))


def test_existing_paths_pass(tmp_path):
    cfg = load('cast_k400.py')
    fields = {}
    for name in ('data_root', 'data_root_val'):
        d = tmp_path / name
        d.mkdir()
        fields[name] = str(d)
    for name in ('ann_file_train', 'ann_file_val', 'clip_weights',
                 'vmae_weights'):
        f = tmp_path / name
        f.write_text('x')
        fields[name] = str(f)
    cfg.merge_from_dict({
        'train_dataloader.dataset.ann_file': fields['ann_file_train'],
        'train_dataloader.dataset.data_prefix.video': fields['data_root'],
        'val_dataloader.dataset.ann_file': fields['ann_file_val'],
        'val_dataloader.dataset.data_prefix.video': fields['data_root_val'],
        'model.backbone.experts.clip.pretrained': fields['clip_weights'],
        'model.backbone.experts.vmae.pretrained': fields['vmae_weights'],
    })
    checked = check_paths(cfg, 'train')
    assert len(checked) == 6
    # only the overridden nested field is reported once it is missing
    cfg.merge_from_dict({'model.backbone.experts.vmae.pretrained':
                         str(tmp_path / 'missing.pth')})
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'train')
    assert 'model.backbone.experts.vmae.pretrained' in str(e.value)
    assert str(e.value).startswith('1 path(s)')
    assert 'ann_file_train' not in str(e.value)


def test_open_clip_tags_and_urls_are_not_paths():
    cfg = load('cast_ssv2.py')
    cfg.merge_from_dict({'model.backbone.experts.clip.pretrained':
                         'open_clip:ViT-B-16/openai'})
    fields = [f for f, _, _ in required_paths(cfg, 'train')]
    assert 'model.backbone.experts.clip.pretrained' not in fields


def test_train_tool_stops_with_the_field_error(tmp_path):
    """tools/train.py reports the missing paths before building anything."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
         osp.join(CONFIGS, 'cast_k400.py'), '--work-dir',
         str(tmp_path / 'w')], cwd=str(tmp_path), env=env,
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'MissingPathError' in proc.stderr
    assert 'ann_file_train' in proc.stderr
    assert 'vmae_weights' in proc.stderr


def _batch_table_of_training_doc():
    """Rows of the 'Batch and accumulation of every config' table of
    docs/training.md: {config file: (gpus, batch, accumulation, effective
    batch, lr)}."""
    import re
    text = open(osp.join(ROOT, 'docs', 'training.md')).read()
    head = '## Batch and accumulation of every config'
    assert head in text, f'docs/training.md: no "{head}" section'
    section = text.split(head, 1)[1].split('\n#', 1)[0]
    rows = {}
    pat = re.compile(r'^\| `configs/([\w.]+)` \| (\d+) x (\d+) x (\d+) = '
                     r'(\d+) \| ([\d.e-]+) \|', re.M)
    for m in pat.finditer(section):
        name, g, b, a, e, lr = m.groups()
        rows[name] = (int(g), int(b), int(a), int(e), float(lr))
    return rows


def test_training_doc_batch_table_matches_every_config():
    """docs/training.md states GPUs x batch x accumulation (and the lr) of every
    shipped config; the figures are the configs' own: batch from the train
    dataloader, GPUs from ``auto_scale_lr.base_batch_size`` (the GPUs x
    batch the lr is set for), accumulation from the optim wrapper (DeepSpeed:
    its strategy)."""
    rows = _batch_table_of_training_doc()
    names = sorted(f for f in os.listdir(CONFIGS) if f.endswith('.py'))
    assert sorted(rows) == names, 'docs/training.md table vs configs/: ' + str(
        sorted(set(rows) ^ set(names)))
    for name in names:
        cfg = load(name)
        batch = cfg.train_dataloader.batch_size
        base = cfg.auto_scale_lr.base_batch_size
        assert base % batch == 0, name
        gpus = base // batch
        accum = cfg.optim_wrapper.get('accumulative_counts', 1)
        if cfg.optim_wrapper.get('type') == 'DeepSpeedOptimWrapper':
            accum = cfg.strategy.gradient_accumulation_steps
        lr = cfg.optim_wrapper.optimizer.lr
        assert rows[name] == (gpus, batch, accum, gpus * batch * accum,
                              pytest.approx(lr, rel=1e-3)), name


# ---------------------------------------------------------------- pins ----
# Every recipe resolves to the model, data and schedule pinned in
# tests/config_pins.json (written from the recipes by tests/_config_pins.py):
# moving shared blocks into configs/_base_/ must not change any of them.

_PINS = load_pins()


def test_every_recipe_is_pinned():
    assert sorted(_PINS) == recipes(), (
        'recipes without a pin (or pins without a recipe): '
        f'{sorted(set(_PINS) ^ set(recipes()))}; after an intended change '
        'run `PYTHONPATH=. python tests/_config_pins.py --write` and review '
        'the diff of tests/config_pins.json')


@pytest.mark.parametrize('name', sorted(_PINS))
def test_recipe_resolves_to_its_pin(name):
    got = resolve(name)
    diffs = differences(_PINS[name], got)
    assert not diffs, f'configs/{name} resolves differently:\n' + '\n'.join(
        diffs[:40])


def test_pin_differences_name_the_field():
    pin = _PINS['cast_ssv2.py']
    changed = resolve('cast_ssv2.py')
    changed['train_cfg']['max_epochs'] += 1
    del changed['optim_wrapper']['optimizer']['lr']
    diffs = differences(pin, changed)
    assert diffs == ['optim_wrapper.optimizer.lr: 0.0015 -> (missing)',
                     'train_cfg.max_epochs: 50 -> 51'], diffs


def _blending_configs():
    names = sorted(glob.glob(osp.join(CONFIGS, '*.py')) +
                   glob.glob(osp.join(CONFIGS, 'ablations', '*.py')))
    return [osp.relpath(n, CONFIGS) for n in names]


def test_every_blending_agrees_with_its_head():
    """Every shipped config (recipes and ablations) with a batch blending
    passes the start-up check of the blending's label counts against the
    head's, checked on the built preprocessor and head (the backbone is not
    built); and for each, a count one off is refused, so the check does
    read that config's blending."""
    from types import SimpleNamespace
    from mmaction.registry import MODELS
    from cast_mmaction.engine.hooks.startup_check_hook import (
        _blendings, check_blending)
    checked = {}
    for name in _blending_configs():
        cfg = load(name)
        pre = cfg.model.get('data_preprocessor') or {}
        if not pre.get('blending'):
            continue
        model = SimpleNamespace(data_preprocessor=MODELS.build(pre),
                                cls_head=MODELS.build(cfg.model.cls_head))
        check_blending(model)
        fields = []
        for field, blend, _ in _blendings(model.data_preprocessor.blending,
                                          'model.data_preprocessor.blending'):
            key = 'num_verbs' if getattr(blend, 'num_verbs', None) \
                else 'num_classes'
            count = getattr(blend, key)
            setattr(blend, key, count + 1)
            with pytest.raises(ValueError, match=f'^{re.escape(field)}.'
                               f'{key}={count + 1} but model.cls_head.'
                               f'{key}={count}: '):
                check_blending(model)
            setattr(blend, key, count)
            fields.append(f'{field}.{key}')
        checked[name] = fields
    # the recipes that mix verb / noun labels and single labels are among them
    assert {'cast_ek100.py', 'ca2st_ek100.py', 'cast_ssv2.py', 'cast_k400.py',
            'cava_vggsound.py', 'ca2st_vggsound.py'} <= set(checked)
    assert checked['cast_ek100.py'] == [
        'model.data_preprocessor.blending.num_verbs']
    assert checked['cast_ssv2.py'] == [
        f'model.data_preprocessor.blending.augments[{k}].num_classes'
        for k in (0, 1)]
