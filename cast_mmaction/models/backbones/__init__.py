from .cast import CASTBackbone

__all__ = ['CASTBackbone']
