"""The speed-up ``cpu_block_cache``: a block cache for torch's CPU allocator
(the C++ side and why: ``cast_mmaction/csrc/cpu_block_cache.cpp``).

CPU tensors of at least ``min_bytes`` (1 MiB) get their own mappings, apart
from glibc's heap; a freed block is kept for the next tensor of its size
(or, with none of that size cached, of up to half its size), up to
``cache_bytes`` of free blocks. In fp32 CPU training this keeps the
heap's freed-but-held memory out of the peak without the page faults of
``malloc_trim`` (docs/benchmarks.md). Process-wide, Linux only; numbers do
not depend on it.

The extension is compiled on first use with torch's JIT builder (a C++
compiler and ninja; ~10 s, then cached in ``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``).
"""
import functools
import logging
import sys

from . import cpp_extensions

FIELD = 'model.backbone.speedups.cpu_block_cache'
MIN_BYTES = 1 << 20
#: ``True``'s limit. A training step frees and allocates the same blocks step
#: after step; the free blocks peak at the end of backward (most of the
#: forward's activations), where little else is live, so keeping them all does
#: not raise the step's peak. A limit below that maps the evicted blocks anew
#: every step: 2048 MiB at batch 2 of CAST ViT-B evicted 36 blocks a step,
#: 325k page faults (1.3 GB faulted in and zeroed), 8192 MiB none, at the same
#: peak (docs/benchmarks.md). The limit bounds what blocks of sizes no longer
#: asked for (another batch or clip length) may hold.
DEFAULT_CACHE_MIB = 8192

logger = logging.getLogger(__name__)


def check_cache_mib(v, field=FIELD):
    """``True`` (:data:`DEFAULT_CACHE_MIB`), a whole number of MiB >= 0, or
    ``False`` / None; returns the MiB (None for off)."""
    if v is None or v is False:
        return None
    if v is True:
        return DEFAULT_CACHE_MIB
    if isinstance(v, int) and v >= 0:
        return v
    raise ValueError(f'{field}={v!r}: give the MiB of free blocks to keep '
                     f'(e.g. 8192), True ({DEFAULT_CACHE_MIB} MiB) or False')


def check_platform():
    """The cache maps memory with mmap: Linux only."""
    if not sys.platform.startswith('linux'):
        raise RuntimeError(f'{FIELD} needs Linux (mmap); set it to False')


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled extension (built on first call)."""
    check_platform()
    return cpp_extensions.build('cast_mmaction_cpu_block_cache',
                                'cpu_block_cache.cpp', FIELD)


def install(cache_mib=DEFAULT_CACHE_MIB, min_bytes=None):
    """Route new CPU blocks of at least ``min_bytes`` (default
    :data:`MIN_BYTES`) through the cache, keeping up to ``cache_mib`` MiB of
    free blocks (called again: the new limits)."""
    cache_mib = check_cache_mib(cache_mib)
    if cache_mib is None:
        raise ValueError(f'{FIELD}: install() needs a number of MiB')
    min_bytes = MIN_BYTES if min_bytes is None else min_bytes
    if isinstance(min_bytes, bool) or not isinstance(
            min_bytes, int) or min_bytes < 4096:
        raise ValueError(f'cpu_block_cache min_bytes={min_bytes!r}: give a '
                         f'number of bytes >= 4096')
    ext = extension()
    was = ext.stats()['installed']
    ext.install(min_bytes, cache_mib << 20)
    if not was:
        logger.info('cpu_block_cache: CPU blocks >= %d bytes from their own '
                    'mappings, up to %d MiB of free blocks kept for reuse',
                    min_bytes, cache_mib)


def uninstall():
    """torch's own CPU allocator for new blocks; blocks in use are returned
    to the cache when freed (:func:`empty_cache` unmaps them)."""
    if extension.cache_info().currsize:
        extension().uninstall()


def empty_cache():
    if extension.cache_info().currsize:
        extension().empty_cache()


def stats():
    """Counters (hits, misses, unmaps, fits: the hits served by a larger
    block, live_blocks) and byte totals
    (cached, mapped, peak_mapped); ``{'installed': 0}`` before any use."""
    if not extension.cache_info().currsize:
        return {'installed': 0}
    return dict(extension().stats())

