#!/usr/bin/env python
"""Install the pinned dependency set into the current interpreter.

mmcv: mmaction2 1.2.0 needs mmcv >= 2.0, < 2.2. A compiled mmcv (with CUDA
ops, ``mmcv._ext``) in that range is kept as it is: replacing it by
mmcv-lite would silently remove its ops on a user's GPU machine. Otherwise
``mmcv-lite==2.1.0`` (pure Python, installs in seconds) is installed, which
is all this package needs.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def pip(*args):
    cmd = [sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', *args]
    print('+', ' '.join(cmd), flush=True)
    subprocess.check_call(cmd)


def mmcv_state():
    """'compiled' / 'lite' / 'incompatible:<version>' / 'missing'."""
    code = ('import mmcv, importlib.util as u;'
            'print(mmcv.__version__, u.find_spec("mmcv._ext") is not None)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return 'missing'
    version, compiled = r.stdout.split()
    major_minor = tuple(int(x) for x in version.split('.')[:2])
    if not (2, 0) <= major_minor < (2, 2):
        return f'incompatible:{version}'
    return 'compiled' if compiled == 'True' else 'lite'


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('-q', '--quiet', action='store_true')
    args = ap.parse_args()
    q = ['-q'] if args.quiet else []
    pip(*q, '-r', os.path.join(ROOT, 'requirements.txt'))
    state = mmcv_state()
    if state == 'compiled':
        print('mmcv: a compiled mmcv 2.0/2.1 is present; keeping it')
    elif state.startswith('incompatible'):
        sys.exit(f'mmcv {state.split(":")[1]} is installed but mmaction2 '
                 f'1.2.0 needs mmcv>=2.0,<2.2. Install a compiled mmcv 2.1 '
                 f'for your CUDA/torch (see the OpenMMLab docs), or uninstall'
                 f' it to get mmcv-lite, then re-run this script.')
    else:
        pip(*q, 'mmcv-lite==2.1.0')
    pip(*q, '--no-deps', '-e', ROOT)


if __name__ == '__main__':
    main()
