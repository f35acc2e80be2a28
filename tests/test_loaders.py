"""Expert weight loaders and the official-checkpoint converter."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from cast_mmaction.checkpoints import (convert_official_cast,
                                       load_clip_expert, load_videomae_expert)
from cast_mmaction.models.experts import CLIPViTExpert, VideoMAEExpert
from conftest import FIXTURES, ROOT


def tiny_clip(**kw):
    args = dict(embed_dim=64, depth=2, num_heads=4, patch_size=16, img_size=32,
                num_frames=4)
    args.update(kw)
    return CLIPViTExpert(**args)


def tiny_vmae(**kw):
    args = dict(embed_dim=64, depth=2, num_heads=4, patch_size=16,
                tubelet_size=2, img_size=32, num_frames=4)
    args.update(kw)
    return VideoMAEExpert(**args)


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


class _OpenAIStyleCLIP(nn.Module):
    """Mimics the OpenAI release: an image tower under ``visual`` with an
    output projection, plus text-tower parameters."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.visual.proj = nn.Parameter(torch.randn(64, 32))
        self.token_embedding = nn.Embedding(10, 32)
        self.logit_scale = nn.Parameter(torch.ones([]))

    def forward(self, x):
        return self.visual.conv1(x).mean() * self.logit_scale


def _same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_openai_torchscript_archive(tmp_path):
    src = randomize(tiny_clip(), 1)
    ref_state = {k: v.clone() for k, v in src.state_dict().items()}
    wrapped = _OpenAIStyleCLIP(src)
    traced = torch.jit.trace(wrapped, torch.randn(1, 3, 32, 32))
    path = tmp_path / 'ViT-tiny.pt'
    traced.save(str(path))
    dst = tiny_clip()
    missing, unexpected = load_clip_expert(dst, str(path))
    assert missing == [] and unexpected == []
    for k, v in dst.state_dict().items():
        assert torch.equal(v, ref_state[k]), k


def test_open_clip_state_dict_files_and_output(tmp_path):
    open_clip = pytest.importorskip('open_clip')
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=2, width=64, head_width=16, patch_size=16,
                        image_size=32),
        text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2,
                      layers=1),
        quick_gelu=True).eval()
    randomize(model.visual, 3)
    state = model.state_dict()
    paths = [tmp_path / 'open_clip_pytorch_model.bin', tmp_path / 'm.pt',
             tmp_path / 'open_clip_model.safetensors']
    torch.save(state, paths[0])
    torch.save({'state_dict': state}, paths[1])
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths[2]))
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.visual(img)  # ln_post(cls) @ proj
    for path in paths:
        expert = tiny_clip(num_frames=1, frame_start=0, frame_step=1).eval()
        missing, unexpected = load_clip_expert(expert, str(path))
        assert missing == [] and unexpected == [], path
        with torch.no_grad():
            ours = expert.forward_plain(img[:, :, None]) @ model.visual.proj
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_clip_position_table_resized_for_other_input_size(tmp_path):
    src = randomize(tiny_clip(img_size=32), 2)
    torch.save({'visual.' + k: v for k, v in src.state_dict().items()},
               tmp_path / 'clip.pt')
    dst = tiny_clip(img_size=64)  # 4x4 grid instead of 2x2
    load_clip_expert(dst, str(tmp_path / 'clip.pt'))
    assert dst.positional_embedding.shape == (17, 64)
    torch.testing.assert_close(dst.positional_embedding[0],
                               src.positional_embedding[0])


def test_clip_loader_refuses_wrong_files(tmp_path):
    vm = tiny_vmae()
    torch.save({'model': {'encoder.' + k: v for k, v in
                          vm.state_dict().items()}}, tmp_path / 'vmae.pth')
    with pytest.raises(ValueError, match='VideoMAE'):
        load_clip_expert(tiny_clip(), str(tmp_path / 'vmae.pth'))
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pt'):
        load_clip_expert(tiny_clip(), str(tmp_path / 'junk.pt'))
    with pytest.raises(FileNotFoundError, match='pretrained'):
        load_clip_expert(tiny_clip(), str(tmp_path / 'missing.pt'))
    src = tiny_clip(embed_dim=96, num_heads=4)
    torch.save(src.state_dict(), tmp_path / 'wide.pt')
    with pytest.raises(ValueError, match='embed_dim=96'):
        load_clip_expert(tiny_clip(), str(tmp_path / 'wide.pt'))
    with pytest.raises(ValueError, match='open_clip:MODEL:TAG'):
        load_clip_expert(tiny_clip(), 'open_clip:ViT-B-16')


def test_videomae_pretraining_checkpoint(tmp_path):
    src = randomize(tiny_vmae(), 4)
    enc = {'encoder.' + k: v for k, v in src.state_dict().items()
           if not k.startswith('fc_norm')}
    enc['encoder.norm.weight'] = torch.ones(64)
    enc['encoder.norm.bias'] = torch.zeros(64)
    enc.update({'decoder.blocks.0.mlp.fc1.weight': torch.randn(8, 8),
                'encoder_to_decoder.weight': torch.randn(8, 64),
                'mask_token': torch.zeros(1, 1, 8)})
    torch.save({'model': enc, 'epoch': 799}, tmp_path / 'pretrain.pth')
    dst = tiny_vmae()
    missing, unexpected = load_videomae_expert(dst, str(tmp_path / 'pretrain.pth'))
    assert unexpected == []  # decoder / final norm are reported as ignored
    assert sorted(missing) == ['fc_norm.bias', 'fc_norm.weight']
    x = torch.randn(1, 3, 4, 32, 32)
    dst.fc_norm.load_state_dict(src.fc_norm.state_dict())
    torch.testing.assert_close(dst.forward_plain(x), src.forward_plain(x))


def test_videomae_finetuned_checkpoint_and_wrong_kinds(tmp_path):
    src = randomize(tiny_vmae(), 5)
    state = dict(src.state_dict())
    state['head.weight'] = torch.randn(10, 64)
    state['head.bias'] = torch.randn(10)
    torch.save({'module': state}, tmp_path / 'ft.pth')
    dst = tiny_vmae()
    missing, unexpected = load_videomae_expert(dst, str(tmp_path / 'ft.pth'))
    assert missing == [] and unexpected == []
    assert _same_params(dst, src)
    torch.save({'visual.' + k: v for k, v in tiny_clip().state_dict().items()},
               tmp_path / 'clip.pt')
    with pytest.raises(ValueError, match='CLIP'):
        load_videomae_expert(tiny_vmae(), str(tmp_path / 'clip.pt'))
    with pytest.raises(ValueError, match='tubelet_size=2'):
        load_videomae_expert(tiny_vmae(tubelet_size=4, num_frames=8),
                             str(tmp_path / 'ft.pth'))


def test_official_converter_refuses_other_checkpoints(tmp_path):
    torch.save({'model': tiny_vmae().state_dict()}, tmp_path / 'v.pth')
    with pytest.raises(ValueError, match='not an official CAST checkpoint'):
        convert_official_cast(str(tmp_path / 'v.pth'))


def _run_tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_convert_tool_output_loads_with_mmengine(tmp_path):
    """The converted file is an MMEngine checkpoint that reproduces the
    reference outputs when loaded the way tools/test.py loads it."""
    from mmengine.runner import load_checkpoint

    from cast_mmaction.safe_load import load_checkpoint as load_file
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    cfg_path = tmp_path / 'tiny_cast.py'
    cfg_path.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=10, embed_dim=96, depth=2, num_heads=4)) + '\n')
    dump = os.path.join(FIXTURES, 'cast_single')
    out = tmp_path / 'converted.pth'
    r = _run_tool('tools/convert/convert_checkpoint.py',
                  os.path.join(dump, 'official_checkpoint.pth'), str(out),
                  '--config', str(cfg_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'fits the model' in r.stdout
    model = build_model(cast_recognizer_cfg(num_classes=10, embed_dim=96,
                                            depth=2, num_heads=4)).eval()
    load_checkpoint(model, str(out), map_location='cpu', strict=True)
    x = load_file(os.path.join(dump, 'input.pt')).float()
    expected = load_file(os.path.join(dump, 'expected.pt'))
    with torch.no_grad():
        got = model.cls_head(model.backbone(x))
    torch.testing.assert_close(got, expected['cls_score'], rtol=0, atol=1e-4)

    # the same file against a model of another architecture: a clear error
    wrong = tmp_path / 'wrong.py'
    wrong.write_text('model = ' + repr(cast_recognizer_cfg(
        composition=True, embed_dim=96, depth=2, num_heads=4)) + '\n')
    r = _run_tool('tools/convert/convert_checkpoint.py',
                  os.path.join(dump, 'official_checkpoint.pth'),
                  str(tmp_path / 'x.pth'), '--config', str(wrong))
    assert r.returncode != 0
    assert 'does not fit' in r.stderr and 'cls_head.fc_verb' in r.stderr


def test_convert_tools_check_dst_before_reading(tmp_path):
    """convert_checkpoint.py and to_safetensors.py: a DST that is a folder,
    or below a file, is a one-line exit naming it before SRC is read (it was
    a FileExistsError / IsADirectoryError / SafetensorError traceback after
    the conversion); a DST in folders that do not exist yet is written,
    creating them (to_safetensors.py stopped with a SafetensorError)."""
    from _tools import load_tool as load

    official = os.path.join(FIXTURES, 'cast_single', 'official_checkpoint.pth')
    (tmp_path / 'a_file').write_text('x')
    (tmp_path / 'a_folder.pth').mkdir()
    (tmp_path / 'a_folder.safetensors').mkdir()
    ckpt = str(tmp_path / 'ours.pth')
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {}}, ckpt)
    for name, src, ext in (('convert_checkpoint', official, 'pth'),
                           ('to_safetensors', ckpt, 'safetensors')):
        tool = load(name)
        cases = [(str(tmp_path / f'a_folder.{ext}'), 'is a folder'),
                 (str(tmp_path / 'a_file' / f'x.{ext}'),
                  f'{tmp_path / "a_file"} is a file')]
        for dst, match in cases:
            with pytest.raises(SystemExit) as e:
                tool.main([src, dst, '--quiet'])
            assert isinstance(e.value.code, str), (name, dst)
            assert e.value.code.startswith(f'ValueError: dst {dst}') and \
                match in e.value.code, e.value.code
        dst = tmp_path / 'new' / name / f'out.{ext}'
        tool.main([src, str(dst), '--quiet'])
        assert dst.is_file()


def test_convert_tool_refuses_bad_sources_in_one_line(tmp_path, capsys):
    """A missing SRC, a file that is no checkpoint, a --kind of another
    family and a checkpoint this package wrote: each a one-line exit
    (SystemExit with the message), not a traceback; the last says the file
    is used directly."""
    import importlib.util
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        'tool_convert_checkpoint', tool_path('convert_checkpoint'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    official = os.path.join(FIXTURES, 'cast_single', 'official_checkpoint.pth')
    ours = tmp_path / 'ours.pth'
    assert tool.main([official, str(ours), '--quiet']) is None
    (tmp_path / 'bad.pth').write_text('hello\n')
    cases = [
        ([str(tmp_path / 'nope.pth')], 'FileNotFoundError: official '
         'checkpoint: file not found'),
        ([str(tmp_path / 'bad.pth')], 'not a PyTorch checkpoint'),
        ([official, '--kind', 'msca'], "ValueError: not an authors' "
         "TokenShift/MSCA checkpoint"),
        ([str(ours)], "already in this package's format"),
        ([str(ours), '--kind', 'cast'], "not an official CAST checkpoint: "
         "the file is already in this package's format"),
    ]
    for argv, match in cases:
        with pytest.raises(SystemExit) as e:
            tool.main(argv[:1] + [str(tmp_path / 'out.pth'), '--quiet'] +
                      argv[1:])
        assert isinstance(e.value.code, str) and match in e.value.code, argv
    assert 'used directly' in e.value.code
    assert not (tmp_path / 'out.pth').exists()
    # --help: the ST-Adapter example is its own paragraph
    with pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    help_text = capsys.readouterr().out
    assert 'configs/st_adapter_k400.py\n\nWith ``--config``' in help_text


def test_convert_tool_with_config_refuses_unmapped_keys_and_a_format_unlike_dst(
        tmp_path, capsys):
    """With --config, SRC keys no table row maps (lost from the output) are
    an error naming them, as ``load_official(strict=True)`` counts them (the
    tool said 'fits' and wrote the file); --format must agree with DST's
    extension, by which every reader picks the format (a .pth written as
    safetensors could be read by nothing)."""
    from _tools import load_tool
    from cast_mmaction.safe_load import load_checkpoint as load_file
    tool = load_tool('convert_checkpoint')
    from cast_mmaction.models.presets import cast_recognizer_cfg
    cfg = tmp_path / 'tiny_cast.py'
    cfg.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=10, embed_dim=96, depth=2, num_heads=4)) + '\n')
    official = os.path.join(FIXTURES, 'cast_single', 'official_checkpoint.pth')
    state = dict(load_file(official)['module'])
    state['blocks.0.T_Adapter_extra.D_fc1.weight'] = torch.zeros(3)
    extra = tmp_path / 'extra.pth'
    torch.save({'module': state}, extra)
    out = tmp_path / 'out.pth'
    with pytest.raises(SystemExit) as e:
        tool.main([str(extra), str(out), '--config', str(cfg), '--quiet'])
    assert 'blocks.0.T_Adapter_extra.D_fc1.weight (in SRC, not mapped)' in \
        str(e.value.code) and 'does not fit' in str(e.value.code)
    assert not out.exists()
    tool.main([official, str(out), '--config', str(cfg), '--quiet'])
    assert 'fits the model' in capsys.readouterr().out
    for fmt, dst in (('safetensors', 'x.pth'), ('pth', 'x.safetensors'),
                     ('safetensors', 'x.ckpt')):
        with pytest.raises(SystemExit) as e:
            tool.parse_args([official, str(tmp_path / dst), '--format', fmt])
        assert e.value.code == 2
        assert 'the readers pick the format by the extension' in \
            capsys.readouterr().err
    tool.main([official, str(tmp_path / 'y.safetensors'), '--format',
               'safetensors', '--quiet'])
    assert load_file(str(tmp_path / 'y.safetensors'))['state_dict']


def test_to_safetensors_refuses_bad_sources_in_one_line(tmp_path):
    """A file that is no checkpoint, or holds no state dict of tensors: a
    one-line exit naming it (a ValueError traceback); a folder given as a
    checkpoint file says it is a folder (it said 'file not found')."""
    from _tools import load_tool
    from cast_mmaction.safe_load import load_checkpoint
    tool = load_tool('to_safetensors')
    (tmp_path / 'bad.pth').write_text('hello\n')
    torch.save({'epoch': 3, 'note': 'no tensors'}, tmp_path / 'empty.pth')
    for src, match in (('bad.pth', 'not a PyTorch checkpoint'),
                       ('empty.pth', 'no state dict of tensors')):
        with pytest.raises(SystemExit) as e:
            tool.main([str(tmp_path / src), str(tmp_path / 'x.safetensors'),
                       '--quiet'])
        assert isinstance(e.value.code, str) and \
            e.value.code.startswith('ValueError: ') and \
            match in e.value.code, e.value.code
    assert not (tmp_path / 'x.safetensors').exists()
    with pytest.raises(FileNotFoundError, match='is a folder, not a '
                       'checkpoint file.*consolidate_checkpoint'):
        load_checkpoint(str(tmp_path))
