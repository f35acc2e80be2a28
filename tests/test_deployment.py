"""ONNX export (cast_mmaction.deployment, tools/deployment/export_onnx.py):
every model family at tiny size, exported, run by onnxruntime at other batch
sizes than the export's and compared with PyTorch; clear errors for what the
exporter cannot take."""
import importlib.util
import os.path as osp

import pytest
import torch

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from cast_mmaction import deployment  # noqa: E402

from conftest import ROOT  # noqa: E402

SMALL = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32,
             patch_size=16)
AV = dict(SMALL, depth=1, input_fdim=32, input_tdim=32, fstride=16, tstride=16)
FRAME = dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
             patch_size=16, img_size=32)


def _cfg(family):
    from cast_mmaction.models.backbones.msca_vit import \
        frame_vit_recognizer_cfg
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.models.presets_av import (ca2st_recognizer_cfg,
                                                 cava_recognizer_cfg)
    return {
        'cast': lambda: cast_recognizer_cfg(num_classes=5, **SMALL),
        'cast_verb_noun': lambda: cast_recognizer_cfg(
            composition=True, verb_classes=4, noun_classes=6, **SMALL),
        'cava': lambda: cava_recognizer_cfg(num_classes=5, **AV),
        'cava_times': lambda: cava_recognizer_cfg(num_classes=5,
                                                  revision=True, **AV),
        'ca2st': lambda: ca2st_recognizer_cfg(num_classes=5, **AV),
        'ca2st_verb_noun': lambda: ca2st_recognizer_cfg(
            composition=True, verb_classes=4, noun_classes=6, **AV),
        'msca': lambda: frame_vit_recognizer_cfg(num_classes=5, shift_div=4,
                                                 **FRAME),
        'tokenshift': lambda: frame_vit_recognizer_cfg(
            num_classes=5, mode='tokenshift', shift_div=4, **FRAME),
        'vit': lambda: frame_vit_recognizer_cfg(num_classes=5, mode='plain',
                                                **FRAME),
    }[family]()


def _model(family, seed=0):
    """A tiny model of ``family`` with every parameter perturbed (so the
    zero-initialised adapters and links act)."""
    from mmaction.registry import MODELS
    torch.manual_seed(seed)
    model = MODELS.build(_cfg(family)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


EXPECTED = {
    'cast': (['video'], ['scores']),
    'cast_verb_noun': (['video'], ['verb_scores', 'noun_scores']),
    'cava': (['video', 'audio'], ['scores']),
    'cava_times': (['video', 'audio', 'times'], ['scores']),
    'ca2st': (['video', 'audio'], ['scores']),
    'ca2st_verb_noun': (['video', 'audio'], ['verb_scores', 'noun_scores']),
    'msca': (['video'], ['scores']),
    'tokenshift': (['video'], ['scores']),
    'vit': (['video'], ['scores']),
}


@pytest.mark.parametrize('family', list(EXPECTED))
def test_export_matches_pytorch_for_every_family(family, tmp_path):
    torch.set_num_threads(1)
    model = _model(family)
    path = str(tmp_path / f'{family}.onnx')
    wrapper, spec, outputs = deployment.export(model, path, num_frames=4)
    inputs, expected_outputs = EXPECTED[family]
    assert [n for n, _ in spec] == inputs
    assert outputs == expected_outputs
    # batch 3 (export ran at 2): the batch axis is dynamic
    diff, spread = deployment.verify(path, wrapper, spec, batch=3)
    assert diff <= 1e-4 and spread > 1e-3
    # batch 1, and the graph computes what the recognizer's own test step
    # computes for one view (backbone, head, average_clips)
    x = deployment.example_inputs(spec, batch=1, seed=5)
    got = deployment.run_ort(deployment.ort_session(path), x)
    with torch.no_grad(), deployment.plain_matmuls():
        feats = model.backbone(x[0] if inputs == ['video'] else
                               dict(zip(inputs, x)))
        ref = model.cls_head(feats)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    if model.cls_head.average_clips == 'prob':
        ref = [r.softmax(-1) for r in ref]
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.shape[0] == 1
        torch.testing.assert_close(g, r, atol=1e-4, rtol=0)
    # the inputs change the output (a graph of constants would not)
    other = deployment.run_ort(deployment.ort_session(path),
                               deployment.example_inputs(spec, 1, seed=6))
    assert (other[0] - got[0]).abs().max() > 1e-6


def test_unsupported_models_are_refused_by_name(tmp_path):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(2, 2)

    with pytest.raises(deployment.ExportError, match='CASTBackbone .*'
                       'MSCAViT.*this model has Linear'):
        deployment.export(Plain(), str(tmp_path / 'x.onnx'))
    model = _model('cast')
    model.cls_head.average_clips = 'median'
    with pytest.raises(deployment.ExportError, match='average_clips'):
        deployment.export(model, str(tmp_path / 'x.onnx'))
    with pytest.raises(deployment.ExportError, match='not found'):
        deployment.ort_session(str(tmp_path / 'missing.onnx'))


def _tool():
    spec = importlib.util.spec_from_file_location(
        'tool_export_onnx', osp.join(ROOT, 'tools', 'deployment',
                                     'export_onnx.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_tool_verify_and_mismatched_checkpoint(tmp_path, capsys):
    from test_tools_infer import make_checkpoint, write_config
    cfg = write_config(str(tmp_path / 'tiny.py'))
    ckpt = str(tmp_path / 'tiny.pth')
    make_checkpoint(cfg, ckpt)
    tool = _tool()
    out = str(tmp_path / 'tiny.onnx')
    assert tool.main([cfg, ckpt, '--out', out, '--verify']) == 0
    text = capsys.readouterr().out
    assert 'video (B, 3, 8, 32, 32) -> scores' in text
    diff = float(text.split('max abs diff:')[1].split()[0])
    spread = float(text.split('differ by up to')[1].split()[0])
    assert diff <= 1e-4 and spread > 1e-3
    assert osp.isfile(out)
    # the checkpoint of another model (verb / noun head): refused, naming it
    vn_cfg = write_config(str(tmp_path / 'vn.py'), epic=True)
    assert tool.main([vn_cfg, ckpt, '--out', str(tmp_path / 'vn.onnx')]) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and ckpt in err and 'fc_verb' in err
    assert not osp.exists(tmp_path / 'vn.onnx')
    # a config that does not exist
    assert tool.main([str(tmp_path / 'nope.py'), ckpt, '--out', out]) == 2
    assert 'nope.py not found' in capsys.readouterr().err
    # neither checkpoint nor --random-weights
    with pytest.raises(SystemExit):
        tool.main([cfg, '--out', out])
    assert '--random-weights' in capsys.readouterr().err


def test_export_tool_refuses_option_values_it_cannot_use(tmp_path, capsys):
    """--threads / --benchmark / --num-frames below 1 and an --opset the
    exporter cannot write stop with a message naming the option and the
    values that work, before anything is traced (torch would print the
    whole graph for a wrong opset, and --threads 0 / --benchmark -1 ended in
    a traceback after the export)."""
    from test_tools_infer import write_config
    cfg = write_config(str(tmp_path / 'tiny.py'))
    tool = _tool()
    out = str(tmp_path / 'tiny.onnx')
    base = [cfg, '--random-weights', '--out', out]
    for option in (['--threads', '0', '--benchmark', '1'],
                   ['--benchmark', '-1'], ['--num-frames', '0']):
        with pytest.raises(SystemExit):
            tool.main(base + option)
        err = capsys.readouterr().err
        assert f'argument {option[0]}' in err and 'positive' in err, err
    high = deployment.max_opset()
    for opset in (deployment.MIN_OPSET - 1, high + 1):
        assert tool.main(base + ['--opset', str(opset)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: opset {opset}: use '
                              f'{deployment.MIN_OPSET} to {high}'), err
        assert len(err) < 500 and not osp.exists(out)
    with pytest.raises(deployment.ExportError, match='opset 13'):
        deployment.export(_model('cast'), out, opset=13)


def test_export_tool_refuses_num_frames_a_cast_model_does_not_take(
        tmp_path, capsys):
    """CAST / CAVA / CA2ST are exported at the clip length they were built
    for: --num-frames of another length is refused by name (it was ignored,
    and the file took 8 frames where 4 were asked for); the same length is
    accepted."""
    from test_tools_infer import write_config
    cfg = write_config(str(tmp_path / 'tiny.py'))  # num_frames=8
    tool = _tool()
    out = str(tmp_path / 'tiny.onnx')
    assert tool.main([cfg, '--random-weights', '--out', out,
                      '--num-frames', '4']) == 2
    err = capsys.readouterr().err
    assert 'error: --num-frames 4' in err and 'built for 8 frames' in err
    assert 'model.backbone.num_frames=4' in err and not osp.exists(out)
    assert tool.main([cfg, '--random-weights', '--out', out,
                      '--num-frames', '8']) == 0
    assert 'video (B, 3, 8, 32, 32)' in capsys.readouterr().out
    # a frame-wise model takes any clip length
    deployment.check_num_frames(_model('msca'), 5)


def test_export_tool_names_an_out_path_it_cannot_write(tmp_path, capsys):
    """--out below a file (its folder cannot be created) is an error line
    naming the path, not a FileExistsError traceback."""
    from test_tools_infer import write_config
    cfg = write_config(str(tmp_path / 'tiny.py'))
    out = str(tmp_path / 'tiny.py' / 'm.onnx')
    assert _tool().main([cfg, '--random-weights', '--out', out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: cannot write {out}') and 'Traceback' \
        not in err and 'writable folder' in err, err


def test_export_tool_names_onnxruntime_failures_by_stage(
        tmp_path, capsys, monkeypatch):
    """onnxruntime failing to load the file (--verify) or to run it
    (--benchmark) is the tool's one-line error naming the stage, the ONNX
    file and onnxruntime's message (it was a traceback); the export itself
    was written."""
    import onnxruntime as ort
    from _tools import load_tool
    from test_tools_infer import write_config
    cfg = write_config(str(tmp_path / 'tiny.py'))
    tool = load_tool('export_onnx')
    out = str(tmp_path / 'tiny.onnx')
    real = ort.InferenceSession

    def cannot_load(*args, **kwargs):
        raise RuntimeError('[ONNXRuntimeError] : 1 : FAIL : Load model '
                           'failed:\nunsupported node')

    monkeypatch.setattr(ort, 'InferenceSession', cannot_load)
    assert tool.main([cfg, '--random-weights', '--out', out,
                      '--verify']) == 2
    err = capsys.readouterr().err
    assert err == (f'error: --verify: onnxruntime cannot load {out}: '
                   f'[ONNXRuntimeError] : 1 : FAIL : Load model failed: '
                   f'unsupported node\n')
    assert osp.isfile(out)

    class CannotRun(real):
        def run(self, *args, **kwargs):
            raise RuntimeError('[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION '
                               ': Non-zero status code returned while '
                               "running Conv node 'conv'")

    monkeypatch.setattr(ort, 'InferenceSession', CannotRun)
    threads = torch.get_num_threads()
    assert tool.main([cfg, '--random-weights', '--out', out,
                      '--benchmark', '1']) == 2
    err = capsys.readouterr().err
    assert err == (f'error: --benchmark: onnxruntime cannot run {out}: '
                   f'[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero '
                   f"status code returned while running Conv node 'conv'\n")
    assert torch.get_num_threads() == threads  # restored after the failure
    assert tool.main([cfg, '--random-weights', '--out', out,
                      '--verify']) == 2
    assert capsys.readouterr().err.startswith(
        f'error: --verify: onnxruntime cannot run {out}: ')


def test_random_weights_are_not_a_constant_function():
    """A freshly built CAST gives the same scores for every input (zero
    adapters and head input); --random-weights fills the zero-initialised
    parameters so the export is checked on a real function."""
    from mmaction.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(_cfg('cast')).eval()
    spec = deployment.input_spec(model)
    wrapper = deployment.OneViewRecognizer(model, ['video'])
    a, b = (deployment.example_inputs(spec, 1, seed=s)[0] for s in (1, 2))
    with torch.no_grad():
        assert torch.equal(wrapper(a), wrapper(b))
        assert deployment.fill_zero_init(model, std=0.3) > 0
        assert (wrapper(a) - wrapper(b)).abs().max() > 1e-5
