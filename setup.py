"""Install with ``pip install -e .`` (see README.md, "Install")."""
import os
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    """A non-editable install (a wheel) carries ``configs/`` inside the
    package as ``cast_mmaction/.mim/configs`` (MMAction2's layout), so the
    model definitions that ``cast_mmaction.models.presets`` reads from
    ``configs/_base_/models/`` exist there too, and ``model-index.yml`` as
    ``cast_mmaction/.mim/model-index.yml`` (for ``mim search``)."""

    def run(self):
        super().run()
        root = os.path.dirname(os.path.abspath(__file__))
        src = os.path.join(root, 'configs')
        mim = os.path.join(self.build_lib, 'cast_mmaction', '.mim')
        dst = os.path.join(mim, 'configs')
        if os.path.isdir(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        # the model index beside the configs, as MMAction2 ships it: `mim
        # search cast_mmaction` reads .mim/model-index.yml, whose metafiles
        # (configs/metafiles/*.yml) name configs relative to it
        index = os.path.join(root, 'model-index.yml')
        if os.path.isfile(index):
            shutil.copy(index, os.path.join(mim, 'model-index.yml'))


with open('cast_mmaction/__init__.py') as f:
    VERSION = re.search(r"__version__ = '([^']+)'", f.read()).group(1)

setup(
    name='cast_mmaction',
    version=VERSION,
    description='CAST, CAVA / CA2ST and MSCA video recognition for MMAction2',
    long_description=open('README.md').read() if __import__('os').path.exists(
        'README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['cast_mmaction', 'cast_mmaction.*']),
    # the C++ sources (and their header) of the speed-ups cpu_block_cache,
    # cpu_attention and cpu_mlp, compiled on first use
    # (cast_mmaction/models/cpp_extensions.py)
    package_data={'cast_mmaction': ['csrc/*.cpp', 'csrc/*.h']},
    python_requires='>=3.9',
    cmdclass={'build_py': BuildWithConfigs},
    # The pinned, tested set lives in requirements.txt; these are the
    # minimal constraints. mmcv (compiled, 2.1.x) or mmcv-lite 2.1.0 is
    # chosen by tools/install_deps.py so a user's compiled mmcv is never
    # replaced.
    install_requires=[
        # torch.serialization.safe_globals (safe_load's scoped allow-list)
        'torch>=2.5',
        'mmengine==0.10.7',
        'mmaction2>=1.2.0,<1.3',
        # mmaction2 1.2.0 imports importlib_metadata without declaring it
        'importlib_metadata',
        # mmengine's `_base_ = "mmaction::..."` needs pkg_resources
        'setuptools<81',
        'numpy',
        'safetensors',
        # progress bars of the tools (cast_mmaction.progress)
        'tqdm',
    ],
    extras_require={
        'clip': ['open_clip_torch'],
        'video': ['decord', 'av', 'opencv-python-headless'],
        'test': ['pytest'],
    },
)
