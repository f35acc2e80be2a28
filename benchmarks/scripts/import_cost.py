"""What importing the plugin costs a process: wall time of
``import cast_mmaction, mmaction.models`` and the resident memory after it
(total, anonymous, file-backed), and whether the modules only MMAction2's
VindLU and mmengine's transformers optimizer need were loaded. One fresh interpreter per round; with
``--checkout DIR`` the rounds alternate between this tree and another
checkout (e.g. a ``git worktree`` of an earlier commit):

    python benchmarks/scripts/import_cost.py [--rounds 3] [--checkout DIR]
"""
import argparse
import os
import subprocess
import sys

_CHILD = r'''
import sys, time
t = time.perf_counter()
import cast_mmaction, mmaction.models  # noqa: E401,F401
dt = time.perf_counter() - t
s = open('/proc/self/status').read()
mib = lambda k: int(s.split(k + ':')[1].split()[0]) / 1024  # noqa: E731
heavy = [m for m in ('torch._dynamo', 'torch._inductor', 'torchvision',
                     'mmaction.models.multimodal.vindlu', 'transformers')
         if m in sys.modules]
print(f"import {dt:5.2f} s  VmRSS {mib('VmRSS'):4.0f} MiB  "
      f"RssAnon {mib('RssAnon'):4.0f} MiB  RssFile {mib('RssFile'):4.0f} MiB  "
      f"loaded {heavy or 'none'}")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--checkout', help='another checkout to alternate with')
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    trees = [here] + ([os.path.abspath(args.checkout)] if args.checkout
                      else [])
    for r in range(args.rounds):
        for tree in trees:
            env = dict(os.environ, PYTHONPATH=tree)
            out = subprocess.run([sys.executable, '-c', _CHILD], cwd=tree,
                                 env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-2000:])
            print(f'round {r}  {tree}: {out.stdout.strip()}', flush=True)


if __name__ == '__main__':
    main()
