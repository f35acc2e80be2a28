from .cast_head import CASTHead, CASTVerbNounHead

__all__ = ['CASTHead', 'CASTVerbNounHead']
from .frame_head import FrameClsHead  # noqa: E402

__all__ += ['FrameClsHead']
