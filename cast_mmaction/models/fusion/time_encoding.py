"""Time encodings on segment timestamps (the CAVA / CA2ST revision).

Instead of learned position tables inside the B-CA, the revision encodes
*where in the source media* each token comes from: a small MLP maps a
segment ``(start, end)`` in seconds to a vector of the B-CA width, and the
backbone adds it to the patch tokens of the links built with
``time_encoding=True``.

Segments per expert:

* a video expert with ``T`` time slots over a clip of ``F`` sampled frames
  (timestamps ``t_0 .. t_{F-1}``) gives slot ``k`` the pair
  ``(t_{kg}, t_{kg+g-1})`` with ``g = F // T`` (tubelet ``k`` of VideoMAE;
  for CLIP on frames 1, 3, ... the same pair although it sees one frame);
* an audio expert splits its crop ``[audio_start, audio_end]`` into
  ``S`` equal segments and assigns them to its spectrogram columns
  (:meth:`ASTExpert.time_segments`).
"""
import torch
import torch.nn as nn

from ..layers import trunc_normal_init


class SegmentTimeMLP(nn.Module):
    """``(start, end)`` -> ``d``: ``num_layers`` x (Linear, ReLU), then
    LayerNorm (the authors' ``time_mlp``)."""

    def __init__(self, dim, num_layers=3, eps=1e-5, in_dim=2):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'time_encoding.num_layers must be >= 1, got '
                             f'{num_layers}')
        self.layers = nn.ModuleList(
            nn.Linear(in_dim if i == 0 else dim, dim)
            for i in range(num_layers))
        self.act = nn.ReLU()
        self.norm = nn.LayerNorm(dim, eps=eps)
        trunc_normal_init(self)

    def forward(self, seg):  # (..., 2) seconds -> (..., d)
        x = seg
        for fc in self.layers:
            x = self.act(fc(x))
        return self.norm(x)


def video_slot_segments(frame_times, num_slots, field='times'):
    """(B, F) frame timestamps -> (B, num_slots, 2): slot ``k`` covers frames
    ``k*g .. k*g+g-1`` with ``g = F // num_slots``; its segment is the first
    and last of their timestamps."""
    b, f = frame_times.shape
    if f % num_slots:
        raise ValueError(f'{field}: {f} frame timestamps cannot be split into '
                         f'{num_slots} time slots of a video expert; the '
                         f'"times" input must hold one timestamp per sampled '
                         f'frame of the clip')
    g = f // num_slots
    grouped = frame_times.reshape(b, num_slots, g)
    return torch.stack([grouped[..., 0], grouped[..., -1]], dim=-1)


def split_segments(start_end, num_segments):
    """(B, 2) -> (B, S, 2): ``S`` equal consecutive segments."""
    lin = torch.linspace(0, 1, num_segments + 1, dtype=start_end.dtype,
                         device=start_end.device)
    s, e = start_end[:, :1], start_end[:, 1:2]
    return torch.stack([s + (e - s) * lin[:-1], s + (e - s) * lin[1:]], -1)


__all__ = ['SegmentTimeMLP', 'video_slot_segments', 'split_segments']
