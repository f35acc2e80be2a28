from .cast_head import CASTHead, CASTVerbNounHead

__all__ = ['CASTHead', 'CASTVerbNounHead']
