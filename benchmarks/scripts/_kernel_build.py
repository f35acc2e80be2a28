"""The C++ attention kernel built from a source text other than the
package's (another revision, parts left out), with the package's flags, and
the inputs the kernel scripts time it on (``cpu_attention_ab.py``,
``cpu_attention_parts.py``, ``alternate_key_blocks.py``)."""
import hashlib
import os
import tempfile

import torch

from cast_mmaction.models import cpp_extensions, cpu_attention


def build_kernel(text, prefix, defines=(), folder=None):
    """The extension compiled from the source ``text`` (written to
    ``folder``, a temporary one by default) under a name of ``prefix`` and
    the text's hash, with the kernel's flags, ``-D`` each of ``defines``
    and the package's C++ headers (csrc/avx512_exp2.h)."""
    from torch.utils import cpp_extension
    cpp_extensions._put_venv_ninja_on_path()
    tag = hashlib.sha1(text.encode()).hexdigest()[:10]
    path = os.path.join(folder or tempfile.mkdtemp(), f'{prefix}_{tag}.cpp')
    with open(path, 'w') as f:
        f.write(text)
    return cpp_extension.load(
        name=f'{prefix}_{tag}', sources=[path],
        extra_cflags=list(cpu_attention.CFLAGS) + [f'-D{d}' for d in defines],
        extra_ldflags=list(cpu_attention.LDFLAGS),
        extra_include_paths=[cpp_extensions.CSRC])


def packed_heads(b, h, n, d, generator):
    """q, k, v: the (B, H, N, D) heads of one random packed (B, N, 3 H D)
    projection, as the experts give them, and a random dO laid out as the
    kernel's output."""
    qkv = torch.randn(b, n, 3 * h * d, generator=generator)
    q, k, v = (t.reshape(b, n, h, d).transpose(1, 2)
               for t in qkv.chunk(3, -1))
    dout = torch.randn(b, n, h, d, generator=generator).transpose(1, 2)
    return q, k, v, dout
