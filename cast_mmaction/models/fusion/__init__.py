from .adapter import Adapter, ConvAdapter
from .link import AttentionRecord, Link, link_class
from .bottleneck_cross_attention import (BottleneckCrossAttention,
                                         WindowCrossAttention,
                                         attention_weights,
                                         position_table_layout)
from .time_encoding import SegmentTimeMLP
from .windows import (WINDOW_POLICIES, WindowPolicy, get_window_policy,
                      position_table_names, register_window_policy)

__all__ = ['Adapter', 'ConvAdapter', 'AttentionRecord', 'Link', 'link_class',
           'BottleneckCrossAttention',
           'WindowCrossAttention', 'attention_weights',
           'SegmentTimeMLP', 'WINDOW_POLICIES', 'WindowPolicy',
           'get_window_policy', 'position_table_names',
           'position_table_layout', 'register_window_policy']
