"""model-index.yml and configs/metafiles/*.yml (MMAction2's schema, read by
mim): every entry names a config that exists and builds, with the parameter
count of the built model; every recipe is listed; every published number
is the one recorded in the shared reference."""
import os
import os.path as osp
import re

import pytest
import torch
import yaml

from conftest import ROOT, SHARED_FIXTURES

#: top-level configs that are no model of their own: the synthetic demos
#: and the same model under another strategy / augmentation device
NOT_INDEXED = {'cast_demo.py', 'cava_demo.py', 'ca2st_demo.py',
               'cast_ssv2_fsdp.py', 'cast_demo_fsdp.py', 'cast_ssv2_deepspeed.py',
               'cast_ssv2_device_aug.py', 'cast_k400_device_aug.py'}


def _index():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    collections, models = {}, []
    for rel in index['Import']:
        path = osp.join(ROOT, rel)
        assert osp.isfile(path), f'model-index.yml imports missing {rel}'
        with open(path) as f:
            meta = yaml.safe_load(f)
        for c in meta['Collections']:
            assert c['Name'] not in collections, c['Name']
            collections[c['Name']] = c
        models += [dict(m, _file=rel) for m in meta['Models']]
    return collections, models


COLLECTIONS, MODELS = _index()


def test_schema_of_every_entry():
    names = [m['Name'] for m in MODELS]
    assert len(names) == len(set(names)), 'model names must be unique'
    for c in COLLECTIONS.values():
        assert c['Paper']['Title'] and c['Paper']['URL'].startswith('https://')
        assert osp.isfile(osp.join(ROOT, c['README'])), c['README']
    for m in MODELS:
        where = f"{m['_file']}: {m['Name']}"
        assert m['In Collection'] in COLLECTIONS, where
        assert osp.isfile(osp.join(ROOT, m['Config'])), where
        meta = m['Metadata']
        assert meta['Training Data'] and isinstance(meta['Parameters'],
                                                    int), where
        assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 0, where
        for res in m.get('Results', []):
            assert res['Dataset'] and res['Task'] == 'Action Recognition'
            assert res['Metrics'] and all(
                isinstance(v, float) for v in res['Metrics'].values()), where
        if 'Weights' in m:
            assert m['Weights'].startswith('https://github.com/'), where
        else:  # an entry without released weights says so
            assert 'no released weights' in meta.get('Note', ''), where


def test_every_recipe_is_indexed():
    recipes = {f for f in os.listdir(osp.join(ROOT, 'configs'))
               if f.endswith('.py')} - NOT_INDEXED
    indexed = {osp.basename(m['Config']) for m in MODELS}
    assert recipes == indexed, (f'not indexed: {sorted(recipes - indexed)}; '
                                f'indexed but absent: '
                                f'{sorted(indexed - recipes)}')


def test_published_numbers_are_the_references():
    ref = osp.join(osp.dirname(SHARED_FIXTURES), 'REFERENCE.md')
    if not osp.isfile(ref):
        pytest.skip(f'{ref} not found (the shared folder beside the checkout)')
    with open(ref) as f:
        text = f.read()
    numbers = set(re.findall(r'\d+\.\d+', text))
    values = [(m['Name'], v) for m in MODELS for r in m.get('Results', [])
              for v in r['Metrics'].values()]
    assert values, 'no published result in the index'
    for name, value in values:
        assert str(value) in numbers, f'{name}: {value} not in {ref}'


def test_every_config_builds_with_its_parameter_count_and_flops():
    """Each config's model, built at full size on the meta device (no
    memory, no initialisation), has the listed parameter count and FLOPs."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmaction.registry import MODELS as REGISTRY
    for m in MODELS:
        cfg = Config.fromfile(osp.join(ROOT, m['Config']))
        pre = cfg.model.get('data_preprocessor') or {}
        if pre.get('blending'):  # builds torch distributions (no meta)
            cfg.model.data_preprocessor.blending = None
        with DefaultScope.overwrite_default_scope('mmaction'), \
                torch.device('meta'):
            model = REGISTRY.build(cfg.model)
        count = sum(p.numel() for p in model.parameters())
        assert count == m['Metadata']['Parameters'], (m['Name'], count)
        _check_flops(m, cfg, model)


def _check_flops(m, cfg, model):
    """FLOPs: one view's forward at batch 1 (the entry's Frames for a
    frame-wise backbone, else the config's), counted on the meta device by
    tools/benchmark.py's meta_flops."""
    import sys
    sys.path.insert(0, ROOT)
    from tools.benchmark import meta_flops
    meta = m['Metadata']
    frames = None if 'num_frames' in cfg.model.backbone else meta['Frames']
    with torch.device('meta'):
        res = meta_flops(cfg, 1, num_frames=frames, train=False, model=model)
    video = res['input_shapes']['video']
    assert video[2] == meta['Frames'], (m['Name'], video)
    assert 'x'.join(map(str, video[3:])) == meta['Resolution'], (m['Name'],
                                                                 video)
    assert int(round(res['gflops_forward'] * 1e9)) == meta['FLOPs'], (
        m['Name'], res['gflops_forward'])
