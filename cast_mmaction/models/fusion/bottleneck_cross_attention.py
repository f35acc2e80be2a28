"""Bottleneck cross-attention (B-CA) between two experts, with window policies.

A *link* joins two streams ``a`` and ``b``. Each stream is projected down
(``down``, Linear D -> d) and normalised (``norm``); then two cross-attentions
run, one where ``a`` queries ``b`` and one where ``b`` queries ``a``, each
restricted to a *window* of the other stream's patch grid ``(T, N)``
(one row each in the policy table of ``windows.py``):

``time``
    a query at ``(t, n)`` sees the other stream's tokens ``(:, n)``: the same
    spatial position across time (CAST's T2S). Needs equal ``N``.
``space``
    a query at ``(t, n)`` sees ``(t, :)``: every patch of the same time step
    (CAST's S2T). Needs equal ``T``.
``global``
    a query sees every patch token of the other stream (CAVA / CA2ST audio
    links).

Learned position embeddings along the window axis are added to both sides
before the projections (time: ``(T, d)``; space: ``(N, d)``; global: a space
table ``(N, d)`` plus a time table ``(T, d)``, added in that order, which is
the authors' layout for the audio links). A link may also add per-sample
*time encodings* (``time_encoding=True``; CAVA / CA2ST revision): grids
``(B, T, N, d)`` computed by the backbone from segment timestamps, added to
the patch tokens of both sides after the down-projection and norm, before
the position tables. Prefix tokens (class / distillation tokens) do not
attend; as in the published models they still pass through ``GELU`` and
``up`` (their normalised down-projection is carried over unchanged). Each
result goes ``GELU -> up (d -> D, zero init)`` and is returned as a residual
update for its stream; the backbone adds it through drop path.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmaction.registry import MODELS
from ..layers import Linear, sdpa_heads
from .link import Link
from .windows import get_window_policy


def attention_weights(q, k, num_heads):
    """``softmax(q k^T / sqrt(d_head))`` per head: ``q`` (B', Lq, H*d),
    ``k`` (B', Lk, H*d) -> (B', H, Lq, Lk), the weights
    ``F.scaled_dot_product_attention`` applies in :func:`sdpa_heads` (same
    scale, same heads split)."""
    b, lq, c = q.shape
    d = c // num_heads
    qh = q.reshape(b, lq, num_heads, d).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], num_heads, d).transpose(1, 2)
    return ((qh @ kh.transpose(-2, -1)) * d**-0.5).softmax(-1)


class WindowCrossAttention(nn.Module):
    """Multi-head cross-attention of query grid (B, Tq, Nq, d) on key/value
    grid (B, Tk, Nk, d) inside a window (a row of
    :data:`~.windows.WINDOW_POLICIES`). Parameters: ``q`` and ``kv`` (with
    biases), ``proj``, and the window's position tables (``q_pos`` /
    ``kv_pos``, plus ``q_pos_t`` / ``kv_pos_t`` for ``global``: the
    policy's ``tables``)."""

    def __init__(self, dim, num_heads, window, q_grid, kv_grid,
                 pos_embed=True):
        super().__init__()
        policy = get_window_policy(window)
        head_dim = dim // num_heads
        if head_dim < 1:
            raise ValueError(f'B-CA width {dim} is less than num_heads='
                             f'{num_heads}; change down_ratio or num_heads')
        policy.check(q_grid, kv_grid)
        self.policy = policy
        self.window, self.num_heads = window, num_heads
        self.q_grid, self.kv_grid = tuple(q_grid), tuple(kv_grid)
        scale = head_dim**-0.5
        # heads of dim // num_heads channels, as the authors' cross-attention
        # (all_head_dim): a width the heads do not divide projects to fewer
        # channels and back (32 -> 30 -> 32 at 6 heads)
        inner = head_dim * num_heads
        self.q = Linear(dim, inner)
        self.kv = Linear(dim, 2 * inner)
        self.proj = Linear(inner, dim)
        self.pos_embed = pos_embed
        axis = dict(t=0, n=1)
        if pos_embed:
            for suffix, ax in policy.tables:
                for side, grid in (('q', self.q_grid), ('kv', self.kv_grid)):
                    self.register_parameter(
                        f'{side}_pos{suffix}', nn.Parameter(
                            scale * torch.randn(grid[axis[ax]], dim)))

    def _tables(self, side):
        return [getattr(self, f'{side}_pos{s}') for s, _ in
                self.policy.tables]

    def position_tables(self):
        """``[(parameter name, side ('q' / 'kv'), axis ('t' / 'n'))]`` of the
        learned position tables (empty without ``pos_embed``)."""
        if not self.pos_embed:
            return []
        return [(f'{side}_pos{s}', side, ax) for s, ax in self.policy.tables
                for side in ('q', 'kv')]

    def add_positions(self, q, kv):
        """The query and key grids plus their window position tables."""
        if self.pos_embed:
            q = self.policy.add_tables(q, self._tables('q'))
            kv = self.policy.add_tables(kv, self._tables('kv'))
        return q, kv

    def forward(self, q, kv, weights_out=None):
        """Query grid ``q`` (B, Tq, Nq, d) attends to ``kv`` (B, Tk, Nk,
        d). ``weights_out``: None, or a list that receives the softmax
        weights of this call, (B, H, windows..., Lq, Lk)
        (:meth:`~.windows.WindowPolicy.weights_by_window`), computed from
        the same ``q`` / ``k`` projections; the output is
        ``F.scaled_dot_product_attention``'s either way."""
        shape, kv_shape = q.shape, kv.shape
        q, kv = self.add_positions(q, kv)
        # the projections act token by token, so they run where the tokens
        # are contiguous: on the grids where the window sequences are views
        # of them (a 'time' window of one sample: a transposed view, which a
        # projection of the sequences copied, and its gradient back), else
        # on the sequences (copies of the grid)
        to_seq, from_seq = self.policy.to_seq, self.policy.from_seq
        view = self.policy.seq_is_view(shape)
        # the projections' biases, where the attention adds them (None:
        # the projections do)
        left = self._bias_left(q, weights_out)

        def project(m, x):
            return m(x) if left is None else F.linear(x, m.weight)

        q = to_seq(project(self.q, q)) if view else project(self.q, to_seq(q))
        kv = to_seq(project(self.kv, kv)) if self.policy.seq_is_view(
            kv_shape) else project(self.kv, to_seq(kv))
        k, v = self._split_kv(kv)
        if weights_out is not None:
            with torch.no_grad():
                w = attention_weights(q, k, self.num_heads)
            weights_out.append(self.policy.weights_by_window(w, shape[0]))
        out = self._attend(q, k, v) if left is None else self._attend(
            q, k, v, left)
        # the heads' output has q's channels (all heads), proj's input
        heads_shape = (*shape[:-1], out.shape[-1])
        return self.proj(from_seq(out, heads_shape)) if view else from_seq(
            self.proj(out), shape)

    def _bias_left(self, q, weights_out):
        """None: the q and k/v projections add their biases; else the
        (3 d) biases of q, k and v, which :meth:`_attend` adds (the CPU
        speed-up ``cpu_attention``'s kernel, as it reads them)."""
        return None

    def _split_kv(self, kv):
        """``kv`` projected, split into k and v (the CPU speed-up
        ``cpu_attention`` gets their gradient as one tensor)."""
        return kv.chunk(2, dim=-1)

    def _attend(self, q, k, v):
        """The heads' attention of the window sequences (the CPU speed-up
        ``cpu_attention`` replaces it, ``models/speedups.py``)."""
        return sdpa_heads(q, k, v, self.num_heads)

    def extra_repr(self):
        return (f'window={self.window}, heads={self.num_heads}, '
                f'q_grid={self.q_grid}, kv_grid={self.kv_grid}')


@MODELS.register_module()
class BottleneckCrossAttention(Link):
    """One B-CA link between two experts at one layer (the default link
    type of ``backbone.links``).

    Args:
        experts: the two :class:`Expert` objects, as ``{name: expert}``
            (only their widths and grids are read).
        windows: ``{name: window}``, the window used when that stream
            queries the other.
        num_heads: heads of both cross-attentions (default: those of the
            first expert).
        down_ratio: bottleneck width = min(expert widths) // down_ratio.
        eps: LayerNorm epsilon of the down-projection norms.
        pos_embed: learn window position tables.
        time_encoding: add the per-sample time-encoding grids passed to
            :meth:`forward` to the patch tokens of both streams.
        receivers: the streams that query the other one and receive an
            update (default both); a one-way link has no cross-attention
            and up-projection for the other stream, which it leaves as it
            is. ``down_ratio=1`` keeps the full width (projections D -> D).
    """

    #: ``down_ratio`` and ``eps`` default to the backbone's ``down_ratio``
    #: and ``link_eps``
    backbone_defaults = dict(down_ratio='down_ratio', eps='link_eps')
    #: ``share_projections``: one down / up module per (layer, expert)
    shareable_parts = ('down', 'up')
    attention_weights = True

    def __init__(self, experts, windows, num_heads=None, down_ratio=2,
                 eps=1e-6, pos_embed=True, time_encoding=False,
                 receivers=None):
        names = list(experts)
        if len(names) != 2 or not isinstance(windows, dict) or set(
                windows) != set(names):
            raise ValueError(f'a link joins two experts and gives a window '
                             f'for each, got experts {names} and windows '
                             f'{windows}')
        super().__init__(experts, receivers)
        windows = dict(windows)
        if num_heads is None:
            num_heads = experts[names[0]].num_heads
        self.time_encoding = bool(time_encoding)
        if not (isinstance(down_ratio, int) and down_ratio >= 1):
            raise ValueError(f'link {names}: down_ratio must be an integer >= '
                             f'1 (1: no bottleneck), got {down_ratio!r}')
        dim = min(e.embed_dim for e in experts.values()) // down_ratio
        self.dim = dim
        self.down = nn.ModuleDict(
            {n: Linear(e.embed_dim, dim) for n, e in experts.items()})
        self.norm = nn.ModuleDict(
            {n: nn.LayerNorm(dim, eps=eps) for n in names})
        other = dict(zip(names, names[::-1]))
        self.attn = nn.ModuleDict({
            q: WindowCrossAttention(dim, num_heads, windows[q],
                                    experts[q].token_grid,
                                    experts[other[q]].token_grid, pos_embed)
            for q in self.receivers
        })
        self.act = nn.GELU()
        self.up = nn.ModuleDict(
            {n: Linear(dim, experts[n].embed_dim) for n in self.receivers})
        for m in list(self.down.values()) + [
                mm for att in self.attn.values()
                for mm in (att.q, att.kv, att.proj)
        ]:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        for m in self.up.values():  # a fresh link changes nothing
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def attention_windows(self):
        return {q: att.window for q, att in self.attn.items()}

    def position_tables(self):
        """``[(name relative to the link, expert name, axis)]`` of the
        learned window tables: ``axis`` ('t' or 'n', see ``windows.py``) of
        the grid of expert ``expert name``."""
        out = []
        for q_name, att in self.attn.items():
            kv_name = next(n for n in self.names if n != q_name)
            for pname, side, axis in att.position_tables():
                out.append((f'attn.{q_name}.{pname}',
                            q_name if side == 'q' else kv_name, axis))
        return out

    def forward(self, tokens, experts, batch, time_enc=None, queries=None):
        """``tokens``: {name: stream tokens}; ``time_enc``: {name: (B, T, N,
        d)} (used when the link was built with ``time_encoding``);
        ``queries``: the receivers to compute (default all, in parallel on
        the same ``tokens``). Returns {name: update}."""
        return self.attend(self.project(tokens), experts, batch, time_enc,
                           queries)

    def project(self, tokens):
        """{name: down projection of that stream's tokens}: the first half
        of :meth:`forward` (the backbone's ``'fusion'`` checkpoint policy
        keeps these and recomputes :meth:`attend`)."""
        return {n: self.down[n](tokens[n]) for n in self.names}

    def attend(self, downs, experts, batch, time_enc=None, queries=None):
        """The rest of :meth:`forward` on the down projections ``downs``:
        norm, time / position additions, window cross-attention, GELU, up
        projection. Returns {name: update}."""
        queries = self.receivers if queries is None else queries
        if self.time_encoding and (time_enc is None or any(
                n not in time_enc for n in self.names)):
            raise ValueError(
                f'B-CA link {self.names} uses time encodings but the backbone '
                f'got none: the backbone needs time_encoding=dict(...) and a '
                f'"times" input (segment timestamps, see docs/audio_visual.md)')
        split = {}
        for n in self.names:
            xn = self.norm[n](downs[n])
            prefix, grid = experts[n].split(xn, batch)
            if self.time_encoding:
                grid = grid + time_enc[n].to(grid.dtype)
            split[n] = (prefix, grid)
        out = {}
        for q_name in queries:
            kv_name = next(n for n in self.names if n != q_name)
            prefix, grid = split[q_name]
            att = self.attn[q_name]
            weights = [] if self._attention_sink is not None else None
            attended = att(grid, split[kv_name][1], weights)
            if weights:
                self.report_attention(
                    q_name, weights[0], source=kv_name, window=att.window,
                    q_grid=tuple(grid.shape[1:3]),
                    kv_grid=tuple(split[kv_name][1].shape[1:3]))
            merged = experts[q_name].merge(prefix, attended, batch)
            out[q_name] = self.up[q_name](self.act(merged))
        return out


def position_table_layout(model):
    """``{state-dict key: (expert name, axis)}`` of every learned B-CA window
    table in ``model``: what a checkpoint converter needs to resize a table
    whose length differs from the model's (``axis`` 't': a 1-D table over
    that expert's time steps; 'n': over its patch grid, e.g. ``grid_hw`` of a
    video expert or ``(f_dim, t_dim)`` of the AST expert)."""
    out = {}
    for prefix, mod in model.named_modules():
        if isinstance(mod, Link):
            for name, expert, axis in mod.position_tables():
                key = f'{prefix}.{name}' if prefix else name
                out[key] = (expert, axis)
    return out
