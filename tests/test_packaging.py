"""A wheel of the plugin (non-editable install) carries what the package
reads at run time: the model definitions of configs/_base_/models/, and the
recipes with their _base_ datasets and schedules, and the model index mim
reads (.mim/model-index.yml + configs/metafiles/), and the C++ source of the
speed-up cpu_block_cache."""
import os
import subprocess
import sys

from conftest import ROOT


def test_wheel_carries_the_model_definitions(tmp_path):
    wheels, target = tmp_path / 'wheels', tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', ROOT, '-w', str(wheels)],
                   check=True, capture_output=True)
    wheel = next(wheels.glob('cast_mmaction-*.whl'))
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--target', str(target), str(wheel)], check=True,
                   capture_output=True)
    probe = ('import cast_mmaction.models.presets as p, sys;'
             'print(p.__file__); print(p.MODEL_BASES);'
             'm = p.base_model("cast_vit_b");'
             'print(sorted(m["backbone"]["experts"]));'
             'from mmengine.config import Config; import os.path as o;'
             'c = Config.fromfile(o.join(o.dirname(o.dirname(p.MODEL_BASES)),'
             '"cast_k400.py"));'
             'print(c.train_cfg.max_epochs, c.train_dataloader.dataset.ann_file)')
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, '-c', probe], cwd=str(tmp_path),
                         env=env, capture_output=True, text=True, check=True)
    path, bases, experts, recipe = out.stdout.strip().splitlines()[-4:]
    assert path.startswith(str(target)), path  # the installed copy ran
    assert bases.startswith(str(target)) and '.mim' in bases, bases
    assert experts == "['clip', 'vmae']"
    # a recipe resolves from the wheel's copy: model + dataset + schedule
    assert recipe == '70 data/kinetics400/kinetics400_train_list_videos.txt', recipe
    # the model index and its metafiles, where mim looks for them
    mim = target / 'cast_mmaction' / '.mim'
    assert (mim / 'model-index.yml').read_text() == open(
        os.path.join(ROOT, 'model-index.yml')).read()
    assert (mim / 'configs' / 'metafiles' / 'cast.yml').is_file()
    assert (mim / 'configs' / 'cast_ssv2.py').is_file()
    # the C++ sources (and the header they include) the speed-ups
    # cpu_block_cache, cpu_attention and cpu_mlp compile on first use
    from cast_mmaction.models.cpp_extensions import CSRC
    for name in sorted(os.listdir(CSRC)):
        src = target / 'cast_mmaction' / 'csrc' / name
        assert src.read_text() == open(os.path.join(CSRC, name)).read()


def test_a_header_change_rebuilds_the_extensions(tmp_path, monkeypatch):
    """torch's JIT builder rebuilds on a change of the sources or flags, not
    of an included header: the headers' digest travels in the flags."""
    from cast_mmaction.models import cpp_extensions
    monkeypatch.setattr(cpp_extensions, 'CSRC', str(tmp_path))
    (tmp_path / 'a.h').write_text('inline int f() { return 1; }\n')
    first = cpp_extensions.depends_flag(['a.h'])
    assert first.startswith('-DCAST_MMACTION_HEADERS=')
    assert cpp_extensions.depends_flag(['a.h']) == first
    (tmp_path / 'a.h').write_text('inline int f() { return 2; }\n')
    assert cpp_extensions.depends_flag(['a.h']) != first
    monkeypatch.undo()
    # each build lists the package headers its source includes
    import re
    from cast_mmaction.models import cpu_attention, cpu_bias_act
    for mod, source in ((cpu_attention, 'cpu_attention.cpp'),
                        (cpu_bias_act, 'cpu_bias_act.cpp')):
        with open(os.path.join(cpp_extensions.CSRC, source)) as f:
            included = re.findall(r'#include "([^"]+)"', f.read())
        assert included and tuple(included) == mod.DEPENDS, source
