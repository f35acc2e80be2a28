"""A worked example of extending cast_mmaction from your own file: a new
expert, a new window policy, a new link type and a new dataset
(docs/architecture.md,
"Adding a piece"). A config pulls it in with
``custom_imports = dict(imports=['my_extension'])``; nothing in the package is
edited. ``tests/test_extension_example.py`` builds and runs it.
"""
import csv
import os.path as osp

import torch
import torch.nn as nn

from cast_mmaction.datasets.annotation_checks import (check_data_list,
                                                      data_infos, fail_at)
from cast_mmaction.models.experts import Expert
from cast_mmaction.models.fusion import (Link, WindowPolicy,
                                         attention_weights,
                                         register_window_policy)
from cast_mmaction.models.layers import grid_size, sdpa_heads
from mmaction.datasets.base import BaseActionDataset
from mmaction.registry import DATASETS, MODELS

# ---------------------------------------------------------------------------
# 1. A window policy: one entry in the table.
#    'global_time': a query sees every patch token of the other stream, with
#    one learned table over each side's time steps only (q_pos / kv_pos of
#    length T). Use it between streams whose patch grids do not correspond.
# ---------------------------------------------------------------------------
register_window_policy(
    WindowPolicy('global_time', group_by=None, tables=(('', 't'), ),
                 doc='(t, n) sees every token; a time table only'))


# ---------------------------------------------------------------------------
# 2. An expert: a small frame-difference ViT (it sees x[t+1] - x[t]).
# ---------------------------------------------------------------------------
class DiffAttention(nn.Module):

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(sdpa_heads(q, k, v, self.num_heads))


class DiffMlp(nn.Sequential):

    def __init__(self, dim, hidden):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(),
                         nn.Linear(hidden, dim))


class DiffBlock(nn.Module):

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = DiffAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DiffMlp(dim, int(dim * mlp_ratio))


@MODELS.register_module()
class FrameDiffExpert(Expert):
    """Tokens: the patches of the T-1 frame differences, (B, (T-1)*N, D)."""

    modality = 'video'  # reads the video input
    role = 'video'  # a space-time model: the "temporal" stream
    fsdp_units = (DiffAttention, DiffMlp)  # what the backbone calls
    embedding_names = ('patch_embed', 'pos_embed')  # layer id 0
    no_weight_decay_names = ('pos_embed', )
    trainable_names = ('norm', )  # stays trainable when frozen

    def __init__(self, embed_dim=64, depth=2, num_heads=4, patch_size=16,
                 img_size=32, num_frames=8, mlp_ratio=2.0, frozen=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dim, self.depth, self.num_heads = (embed_dim, depth,
                                                      num_heads)
        hw = grid_size(img_size, patch_size, 'img_size (FrameDiffExpert)')
        self.grid_t, self.grid_n = num_frames - 1, hw[0] * hw[1]
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(
            0.02 * torch.randn(self.grid_t * self.grid_n, embed_dim))
        self.blocks = nn.ModuleList(
            DiffBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        if frozen:
            self.freeze()

    def embed(self, video):  # (B, C, T, H, W)
        diff = video[:, :, 1:] - video[:, :, :-1]
        b, c, t, h, w = diff.shape
        x = self.patch_embed(diff.transpose(1, 2).reshape(b * t, c, h, w))
        x = x.flatten(2).transpose(1, 2).reshape(b, t * self.grid_n, -1)
        return x + self.pos_embed.to(x.dtype)

    def attn_branch(self, i, x):
        return self.blocks[i].attn(self.blocks[i].norm1(x))

    def mlp_norm(self, i, x):
        return self.blocks[i].norm2(x)

    def mlp_branch(self, i, xn):
        return self.blocks[i].mlp(xn)

    def pool(self, x, batch):
        return self.norm(x.mean(1))

    def split(self, x, batch):  # no prefix tokens
        return None, x.reshape(batch, self.grid_t, self.grid_n, x.shape[-1])

    def merge(self, prefix, grid, batch):
        return grid.reshape(batch, -1, grid.shape[-1])


# ---------------------------------------------------------------------------
# 3. A link type: each receiver's tokens attend to the other stream's time
#    steps, each pooled over its patches (one key per time step, with a
#    learned table over time). It declares what the backbone, FSDP, the
#    optimizer and record_attention() ask of a link.
# ---------------------------------------------------------------------------
class TimePool(nn.Module):
    """(B, T, N, d) grid -> (B, T, d): the mean over patches plus a learned
    table over time steps."""

    def __init__(self, grid_t, dim):
        super().__init__()
        self.time_pos = nn.Parameter(0.02 * torch.randn(grid_t, dim))

    def forward(self, grid):
        return grid.mean(2) + self.time_pos.to(grid.dtype)


@MODELS.register_module()
class TimePoolLink(Link):

    backbone_defaults = dict(down_ratio='down_ratio')  # backbone's default
    shareable_parts = ('down', )  # share_projections may tie these
    no_weight_decay_names = ('time_pos', )
    attention_weights = True  # reports its softmax weights
    # fsdp_units: not set, so the link itself is one FSDP unit

    def __init__(self, experts, receivers=None, num_heads=2, down_ratio=2):
        super().__init__(experts, receivers)
        if len(self.names) != 2:
            raise ValueError(f'TimePoolLink joins two experts, got '
                             f'{self.names}')
        dim = min(e.embed_dim for e in experts.values()) // down_ratio
        self.dim, self.num_heads = dim, num_heads
        self.down = nn.ModuleDict(
            {n: nn.Linear(e.embed_dim, dim) for n, e in experts.items()})
        self.pool = nn.ModuleDict(
            {n: TimePool(e.grid_t, dim) for n, e in experts.items()})
        self.q = nn.ModuleDict({n: nn.Linear(dim, dim)
                                for n in self.receivers})
        self.kv = nn.ModuleDict({n: nn.Linear(dim, 2 * dim)
                                 for n in self.receivers})
        self.up = nn.ModuleDict({n: nn.Linear(dim, experts[n].embed_dim)
                                 for n in self.receivers})
        for m in self.up.values():  # a fresh link changes nothing
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def attention_windows(self):
        return {n: 'time_pool' for n in self.receivers}

    def attend(self, downs, experts, batch, time_enc=None, queries=None):
        out = {}
        for q_name in queries or self.receivers:
            kv_name = next(n for n in self.names if n != q_name)
            _, kv_grid = experts[kv_name].split(downs[kv_name], batch)
            keys = self.pool[kv_name](kv_grid)  # (B, Tk, d)
            # the queries: the receiver's patch tokens, (B, Tq * Nq, d);
            # its prefix tokens (class token) do not attend
            prefix, grid = experts[q_name].split(downs[q_name], batch)
            b, t, n, d = grid.shape
            q = self.q[q_name](grid.reshape(b, t * n, d))
            k, v = self.kv[q_name](keys).chunk(2, dim=-1)
            if self._attention_sink is not None:  # (B, heads, Tq*Nq, Tk)
                self.report_attention(
                    q_name, attention_weights(q, k, self.num_heads),
                    source=kv_name)
            att = sdpa_heads(q, k, v, self.num_heads).reshape(b, t, n, d)
            merged = experts[q_name].merge(prefix, att, batch)
            out[q_name] = self.up[q_name](merged)
        return out


# ---------------------------------------------------------------------------
# 4. A dataset that checks its own annotations.
#    Annotation: a CSV with a header "video,label".
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class CsvClipDataset(BaseActionDataset):

    def _rows(self):
        with open(self.ann_file, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, row

    def load_data_list(self):
        root = self.data_prefix.get('video', '') or ''
        return [dict(filename=osp.join(root, row['video']),
                     label=int(row['label']), csv_line=line)
                for line, row in self._rows()]

    def verify_annotations(self, num_classes=None,
                           num_classes_field='model.cls_head.num_classes'):
        """Labels inside 0..num_classes-1, paths inside the data root, no
        repeated clip; errors name the CSV line."""
        for line, row in self._rows():
            label = int(row['label'])
            if num_classes is not None and not 0 <= label < num_classes:
                fail_at(self.ann_file, line,
                        f'label {label} is outside 0..{num_classes - 1} '
                        f'({num_classes_field}={num_classes})')
        infos = data_infos(self)
        check_data_list(self, infos, self.ann_file,
                        [d['csv_line'] for d in infos], id_key='filename')
        return len(infos)
