"""The package's C++ extensions (``cast_mmaction/csrc``), compiled on first
use with torch's JIT builder and cached in ``TORCH_EXTENSIONS_DIR`` (by
default ``~/.cache/torch_extensions``): the speed-ups ``cpu_block_cache``
and ``cpu_attention`` (``models/speedups.py``).
"""
import hashlib
import os
import shutil
import sys
import sysconfig

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'csrc')


def _put_venv_ninja_on_path():
    # pip's ninja (requirements.txt) sits beside the interpreter, which a
    # venv's python run without activating it does not put on PATH
    if shutil.which('ninja') is None:
        here = os.path.dirname(sys.executable)
        if os.path.exists(os.path.join(here, 'ninja')):
            os.environ['PATH'] = here + os.pathsep + os.environ.get('PATH', '')


def toolchain():
    """``(ok, why)``: whether a C++ compiler (``$CXX`` or ``c++``), ninja
    and this Python's C headers (``Python.h``, which pybind11 includes;
    the ``python3-dev`` package of many distributions) are found, the facts
    a build needs."""
    _put_venv_ninja_on_path()
    cxx = os.environ.get('CXX', 'c++')
    if shutil.which(cxx) is None:
        return False, f'no C++ compiler ({cxx!r}) on PATH'
    if shutil.which('ninja') is None:
        return False, 'no ninja on PATH (pip install ninja)'
    include = sysconfig.get_paths().get('include') or ''
    if not os.path.isfile(os.path.join(include, 'Python.h')):
        return False, (f"no Python.h in {include!r} (this Python's C "
                       f"headers: e.g. the python3-dev package)")
    return True, f'C++ compiler {cxx!r}, ninja and Python.h found'


def depends_flag(depends):
    """A ``-D`` flag naming the contents of the headers ``csrc/<depends>``:
    torch's JIT builder rebuilds an extension when its sources or flags
    change, not when a header it includes does, so the headers' digest
    travels in the flags."""
    digest = hashlib.sha256()
    for header in depends:
        with open(os.path.join(CSRC, header), 'rb') as f:
            digest.update(f.read())
    return f'-DCAST_MMACTION_HEADERS={digest.hexdigest()[:16]}'


def build(name, source, field, cflags=('-O2', ), ldflags=(), depends=()):
    """Compile (or load the cached build of) ``csrc/<source>`` as the
    module ``name``, rebuilt when it or a header in ``depends`` changes; a
    failure names ``field``, the setting that asked for it, and how to turn
    it off."""
    from torch.utils import cpp_extension
    _put_venv_ninja_on_path()
    path = os.path.join(CSRC, source)
    if depends:
        cflags = tuple(cflags) + (depends_flag(depends), )
    from mmengine.logging import print_log
    # the first forward that needs it waits for the build (10-20 s on a
    # 2-core CPU; a cached build loads in well under a second): say so (the
    # log's own time stamps show the wait; this module reads no clock:
    # tests/test_perf_paths.py)
    print_log(f'{field}: loading the C++ extension {name} (compiled on first '
              f'use, cached in TORCH_EXTENSIONS_DIR)', logger='current')
    try:
        ext = cpp_extension.load(name=name, sources=[path],
                                 extra_cflags=list(cflags),
                                 extra_ldflags=list(ldflags), verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build
        raise RuntimeError(
            f'{field}: building the C++ extension {path} failed ({e}); it '
            f'needs a C++ compiler, ninja (pip install ninja) and Python\'s '
            f'C headers (Python.h, e.g. python3-dev), or set {field}=False'
        ) from e
    print_log(f'{field}: C++ extension {name} ready', logger='current')
    return ext


# the AVX-512 kernels' build (cpu_attention.cpp, cpu_bias_act.cpp; also the
# benchmark scripts' builds of other sources of them)
AVX512_CFLAGS = ('-O3', '-mavx512f', '-mfma', '-fopenmp')
AVX512_LDFLAGS = ('-fopenmp', )


def avx512_refusal(facts, what):
    """Why ``what`` (built with :data:`AVX512_CFLAGS`) cannot run on the CPU
    of ``facts`` (:func:`cast_mmaction.utils.cpu_facts`), naming the fix, or
    None."""
    if 'avx512f' in set(facts.get('cpu_isa') or ()):
        return None
    return (f"the CPU has no AVX-512F on this machine "
            f"({facts.get('cpu_model')}); {what} needs AVX-512F: set it to "
            f"False")


def avx512_unavailable(what):
    """Why ``what`` cannot be built and run here (the CPU's instructions, a
    C++ toolchain), or None: the reason a test or a benchmark skips it."""
    from ..utils import cpu_facts
    why = None
    if 'avx512f' not in set(cpu_facts().get('cpu_isa') or ()):
        why = 'the CPU has no AVX-512F'
    else:
        ok, tool = toolchain()
        why = None if ok else tool
    return None if why is None else f'{what} cannot run here: {why}'


def build_avx512(name, source, field, what, depends=()):
    """:func:`build` with :data:`AVX512_CFLAGS`, after the CPU check: on a
    CPU without AVX-512F a clear error naming ``field`` instead of an
    illegal instruction."""
    from ..utils import cpu_facts
    why = avx512_refusal(cpu_facts(), what)
    if why:
        raise RuntimeError(f'{field}: {why}')
    return build(name, source, field, cflags=AVX512_CFLAGS,
                 ldflags=AVX512_LDFLAGS, depends=depends)
