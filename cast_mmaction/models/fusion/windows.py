"""Window policies of the B-CA links, as one table of records.

A link's cross-attention lets a query grid ``(B, Tq, Nq, d)`` attend to a
key / value grid ``(B, Tk, Nk, d)`` inside a *window*. A policy says

* ``group_by``: which grid axis splits the tokens into independent
  attention problems: ``'n'`` (one sequence over time per patch position),
  ``'t'`` (one sequence over the patches per time step) or ``None`` (one
  sequence over all ``T * N`` tokens). The grouped axis must have the same
  size on both sides;
* ``tables``: the learned position tables, in the order they are added, as
  ``(suffix, axis)``: the parameters are ``q_pos<suffix>`` (length of the
  query grid's axis) and ``kv_pos<suffix>`` (the key grid's), ``axis`` being
  ``'t'`` (time steps) or ``'n'`` (patches). These names are the state-dict
  names, no-weight-decay names and the converter's resize rules.

Adding a policy is one :func:`register_window_policy` call (in any module a
config imports); :class:`~.bottleneck_cross_attention.WindowCrossAttention`,
the optimizer and the checkpoint converters read the table.

The shipped policies::

    time    a query at (t, n) sees (:, n): the same position across time
            (CAST's T2S); table over time
    space   a query at (t, n) sees (t, :): every patch of its time step
            (CAST's S2T); table over patches
    global  a query sees every patch token (CAVA / CA2ST audio links);
            a table over patches plus one over time, in that order
"""
from dataclasses import dataclass

AXES = {'t': 'time steps', 'n': 'patches per frame'}

# What to change when the grouped axis differs between the two sides.
_MISMATCH_HINT = {
    'n': "make the experts' img_size / patch_size give the same grid",
    't': "adjust num_frames, tubelet_size or the spatial expert's "
         'frame_step',
}


@dataclass(frozen=True)
class WindowPolicy:
    """One row of :data:`WINDOW_POLICIES` (see the module docstring)."""
    name: str
    group_by: object  # 'n', 't' or None
    tables: tuple  # ((suffix, axis), ...)
    doc: str = ''

    def __post_init__(self):
        if self.group_by not in ('n', 't', None):
            raise ValueError(f'window policy {self.name!r}: group_by must be '
                             f"'n', 't' or None, got {self.group_by!r}")
        suffixes = [s for s, _ in self.tables]
        if len(set(suffixes)) != len(suffixes):
            raise ValueError(f'window policy {self.name!r}: repeated table '
                             f'suffix in {self.tables}')
        for suffix, axis in self.tables:
            if axis not in AXES:
                raise ValueError(f'window policy {self.name!r}: table '
                                 f'{suffix!r} has axis {axis!r}; use one of '
                                 f'{sorted(AXES)}')

    # -- shapes -----------------------------------------------------------
    def check(self, q_grid, kv_grid):
        """Raise ``ValueError`` when the two ``(T, N)`` grids do not fit."""
        if self.group_by is None:
            return
        k = 0 if self.group_by == 't' else 1
        if q_grid[k] != kv_grid[k]:
            raise ValueError(
                f'a {self.name}-window link needs the same number of '
                f'{AXES[self.group_by]} on both sides, got {q_grid[k]} and '
                f'{kv_grid[k]}: {_MISMATCH_HINT[self.group_by]}')

    def to_seq(self, x):
        """(B, T, N, d) -> (B', L, d): the independent attention problems."""
        b, t, n, d = x.shape
        if self.group_by == 'n':
            return x.transpose(1, 2).reshape(b * n, t, d)
        if self.group_by == 't':
            return x.reshape(b * t, n, d)
        return x.reshape(b, t * n, d)

    def seq_is_view(self, grid_shape):
        """Whether :meth:`to_seq` of a contiguous grid of ``grid_shape``
        (and :meth:`from_seq` of contiguous sequences) is a view: for
        ``'n'`` only with one sample (or one time step / patch), else the
        patches' sequences of several samples are copies."""
        b, t, n, _ = grid_shape
        return self.group_by != 'n' or b == 1 or t == 1 or n == 1

    def from_seq(self, out, grid_shape):
        """Inverse of :meth:`to_seq` for a query grid of ``grid_shape``."""
        b, t, n, d = grid_shape
        if self.group_by == 'n':
            return out.reshape(b, n, t, d).transpose(1, 2)
        return out.reshape(b, t, n, d)

    def weights_by_window(self, weights, batch):
        """Attention weights of the problems of :meth:`to_seq`, (B', H, Lq,
        Lk), -> (B, H, windows, Lq, Lk): ``windows`` is the grouped axis
        (``'n'``: patch position, ``Lq`` / ``Lk`` the time steps; ``'t'``:
        time step, ``Lq`` / ``Lk`` the patches); without ``group_by`` there
        is no window axis: (B, H, Tq * Nq, Tk * Nk)."""
        if self.group_by is None:
            return weights
        g = weights.shape[0] // batch
        return weights.reshape(batch, g, *weights.shape[1:]).transpose(1, 2)

    def weights_to_grid(self, weights, q_grid):
        """Weights of :meth:`weights_by_window` with the heads averaged or
        selected, (B, windows..., Lq, Lk), -> the query grid (B, Tq, Nq, Lk)
        (``Lk``: the keys of the query's window)."""
        tq, nq = q_grid
        if self.group_by == 'n':  # (B, Nq, Tq, Tk)
            return weights.transpose(1, 2)
        if self.group_by == 't':  # (B, Tq, Nq, Nk)
            return weights
        return weights.reshape(weights.shape[0], tq, nq, weights.shape[-1])

    # -- position tables --------------------------------------------------
    def table_names(self):
        """State-dict names of the tables: ``q_pos<s>``, ``kv_pos<s>``."""
        return tuple(f'{side}_pos{s}' for s, _ in self.tables
                     for side in ('q', 'kv'))

    def add_tables(self, x, tables):
        """``x`` (B, T, N, d) plus the ``tables`` (one per :attr:`tables`
        entry, in order), each broadcast along its axis."""
        for (_, axis), pos in zip(self.tables, tables):
            x = x + (pos[None, :, None] if axis == 't' else pos[None, None])
        return x


WINDOW_POLICIES = {}


def register_window_policy(policy, force=False):
    """Add ``policy`` (a :class:`WindowPolicy`) to the table; returns it."""
    if not isinstance(policy, WindowPolicy):
        raise TypeError(f'register_window_policy needs a WindowPolicy, got '
                        f'{type(policy).__name__}')
    if policy.name in WINDOW_POLICIES and not force:
        raise KeyError(f'window policy {policy.name!r} exists already; '
                       f'pick another name or pass force=True')
    WINDOW_POLICIES[policy.name] = policy
    return policy


def get_window_policy(name):
    if name not in WINDOW_POLICIES:
        raise ValueError(
            f'window must be one of {tuple(WINDOW_POLICIES)}, got {name!r} '
            f'(new policies: cast_mmaction.models.fusion.'
            f'register_window_policy)')
    return WINDOW_POLICIES[name]


def position_table_names():
    """Every position-table parameter name of every registered policy (no
    weight decay, as the authors' ``no_weight_decay`` list)."""
    names = []
    for policy in WINDOW_POLICIES.values():
        names.extend(n for n in policy.table_names() if n not in names)
    return tuple(names)


for _policy in (
        WindowPolicy('time', group_by='n', tables=(('', 't'), ),
                     doc='(t, n) sees (:, n); CAST T2S'),
        WindowPolicy('space', group_by='t', tables=(('', 'n'), ),
                     doc='(t, n) sees (t, :); CAST S2T'),
        WindowPolicy('global', group_by=None,
                     tables=(('', 'n'), ('_t', 't')),
                     doc='(t, n) sees every token; CAVA / CA2ST audio'),
):
    register_window_policy(_policy)

__all__ = ['WindowPolicy', 'WINDOW_POLICIES', 'register_window_policy',
           'get_window_policy', 'position_table_names']
