from .adapter import Adapter
from .bottleneck_cross_attention import (BottleneckCrossAttention,
                                         WindowCrossAttention)

__all__ = ['Adapter', 'BottleneckCrossAttention', 'WindowCrossAttention']
from .time_encoding import SegmentTimeMLP  # noqa: E402

__all__ += ['SegmentTimeMLP']
