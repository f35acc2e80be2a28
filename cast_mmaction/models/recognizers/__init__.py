from .audio_visual import AudioVisualRecognizer

__all__ = ['AudioVisualRecognizer']
