"""Progress bars of the long-running tools (cast_mmaction.progress): on
stderr, never on stdout, and --quiet turns them off."""
import pytest
import torch

from test_prepare import load_tool, touch, write_k400_csv

from cast_mmaction.progress import Stages


def test_prepare_k400_shows_progress_on_stderr_and_quiet_hides_it(
        tmp_path, capsys):
    tool = load_tool('prepare_k400')
    write_k400_csv(tmp_path / 'train.csv', [('zumba', 'aaa', 10, 20,
                                             'train', 0),
                                            ('abseiling', 'bbb', 0, 10,
                                             'train', 0)])
    videos = tmp_path / 'videos'
    touch(videos / 'zumba' / 'aaa_000010_000020.mp4')
    touch(videos / 'bbb.mp4')
    argv = ['--csv', f'train={tmp_path / "train.csv"}', '--videos',
            f'train={videos}', '--out-dir', str(tmp_path / 'out')]
    assert tool.main(argv) == 0
    out, err = capsys.readouterr()
    assert f'indexing {videos}' in err and 'train rows' in err
    assert '2/2' in err  # both rows counted
    assert 'indexing' not in out and 'train rows' not in out
    assert tool.main(argv + ['--quiet']) == 0
    out_quiet, err_quiet = capsys.readouterr()
    assert 'indexing' not in err_quiet and 'train rows' not in err_quiet
    assert out_quiet == out  # the results are the same


def test_to_safetensors_shows_its_stages(tmp_path, capsys):
    src, dst = tmp_path / 'a.pth', tmp_path / 'a.safetensors'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {}}, src)
    tool = load_tool('to_safetensors')
    assert tool.main([str(src), str(dst)]) == 0
    err = capsys.readouterr().err
    assert 'to_safetensors a.pth' in err and '2/2' in err
    assert tool.main([str(src), str(dst), '--quiet']) == 0
    assert 'to_safetensors' not in capsys.readouterr().err


def test_stages_count_the_steps_and_name_unknown_ones(capsys):
    with Stages(['read', 'convert', 'write'], 'job') as stage:
        stage('read')
        stage('convert')
        with pytest.raises(ValueError, match="unknown stage 'check'"):
            stage('check')
        stage('write')
    err = capsys.readouterr().err
    assert 'job' in err and '3/3' in err and 'write' in err
    # a failing step leaves the bar where it stopped
    with pytest.raises(RuntimeError):
        with Stages(['read', 'write'], 'failing') as stage:
            stage('read')
            raise RuntimeError('cannot read')
    err = capsys.readouterr().err
    assert '0/2' in err and '2/2' not in err
