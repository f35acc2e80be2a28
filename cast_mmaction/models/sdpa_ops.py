"""What the package's attention operators share
(``models/onednn_attention.py``, ``models/cpu_attention.py``): both are a
``torch.library.custom_op`` pair ``(q, k, v, scale, with_lse[, bias]) ->
(out, lse)`` and ``(dout, q, k, v, out, lse, scale[, bias]) -> (dq, dk,
dv)``, with the same fake kernels, wired into autograd and the FLOP counter
the same way. ``bias`` (the C++ kernel's): None, or the (3 H d) bias of a
packed q/k/v projection whose thirds q, k and v are, added by the kernel
as it reads them.
"""
import torch


def needs_lse(q, k, v):
    """Whether the forward keeps the log-sum-exp: autograd will call the
    backward."""
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                        or v.requires_grad)


def register_pair(forward_op, backward_op, packed_backward_op=None,
                  is_packed=None, kv_backward_op=None, kv_whole=None):
    """The shape-only (fake) kernels of both operators and autograd for
    ``forward_op``: q, k, v, the output and the log-sum-exp kept,
    ``backward_op`` called on them; or, where ``is_packed(q, k, v)``,
    ``packed_backward_op`` (the same arguments, the gradients as one
    (B, L, 3, H, d) tensor), whose thirds are returned; or, where
    ``kv_whole(k, v)`` (a (B, L, 2 H d) tensor whose halves k and v are),
    ``kv_backward_op`` (the same arguments; dq, and dk / dv as the halves of
    one tensor laid out as that whole), whose halves are returned. Operators
    with a ``bias`` input pass it to their backward; its gradient is the
    sum of q's, k's and v's over batch and tokens."""

    @forward_op.register_fake
    def _fake_forward(q, k, v, scale, with_lse, *bias):
        b, h, lq, _ = q.shape
        out = q.new_empty(b, h, lq, v.shape[-1])
        return out, (q.new_empty(b, h, lq) if with_lse else q.new_empty(0))

    @backward_op.register_fake
    def _fake_backward(dout, q, k, v, out, lse, scale, *bias):
        return (torch.empty_like(q), torch.empty_like(k),
                torch.empty_like(v))

    def setup_context(ctx, inputs, output):
        q, k, v, scale = inputs[:4]
        out, lse = output
        ctx.scale = scale
        # the C++ kernel's bias (None without one; not an input of the
        # oneDNN operators)
        ctx.bias = inputs[5] if len(inputs) > 5 else None
        ctx.grads = len(inputs)
        ctx.save_for_backward(q, k, v, out, lse)

    if packed_backward_op is not None:
        @packed_backward_op.register_fake
        def _fake_packed_backward(dout, q, k, v, out, lse, scale, *bias):
            b, h, n, d = q.shape
            return q.new_empty(b, n, 3, h, d)

    if kv_backward_op is not None:
        @kv_backward_op.register_fake
        def _fake_kv_backward(dout, q, k, v, out, lse, scale, *bias):
            whole = kv_whole(k, v)
            return (torch.empty_like(q),
                    torch.empty_strided(whole.shape, whole.stride(),
                                        dtype=k.dtype, device=k.device))

    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        bias = ctx.bias
        extra = () if ctx.grads == 5 else (bias, )

        def with_bias_grad(dq, dk, dv):
            grads = (dq, dk, dv, None, None)
            if bias is not None and bias.requires_grad:
                # (B, H, L, d) each -> the (3 H d) bias's layout
                return grads + (torch.stack([t.sum((0, 2)) for t in (
                    dq, dk, dv)]).reshape(bias.shape), )
            return grads + (None, ) * (ctx.grads - 5)

        if packed_backward_op is not None and is_packed(q, k, v):
            g = packed_backward_op(dout, q, k, v, out, lse, ctx.scale,
                                   *extra)
            return with_bias_grad(g[:, :, 0].transpose(1, 2),
                                  g[:, :, 1].transpose(1, 2),
                                  g[:, :, 2].transpose(1, 2))
        if kv_backward_op is not None and kv_whole(k, v) is not None:
            dq, g = kv_backward_op(dout, q, k, v, out, lse, ctx.scale, *extra)
            b, h, lk, d = k.shape
            return with_bias_grad(
                dq, g[..., :h * d].reshape(b, lk, h, d).transpose(1, 2),
                g[..., h * d:].reshape(b, lk, h, d).transpose(1, 2))
        return with_bias_grad(*backward_op(dout, q, k, v, out, lse,
                                           ctx.scale, *extra))

    forward_op.register_autograd(backward, setup_context=setup_context)


def has_flop_formula(packet, registry=None):
    """Whether ``torch.utils.flop_counter`` (or ``registry``) has a formula
    for the operator ``packet``: torch registers some by their overload
    packet (2.15), others by an overload (older)."""
    if registry is None:
        from torch.utils.flop_counter import flop_registry as registry
    return packet in registry or any(
        getattr(packet, o, None) in registry for o in packet.overloads())


def register_flop_formulas(forward_packet, backward_packet,
                           *packed_backward_packets):
    """The FLOPs of the pair for ``torch.utils.flop_counter``: those of
    torch's fused attention (forward: 2 matmuls; backward: 5, the recompute
    of the scores included); idempotent."""
    from torch.utils import flop_counter
    if has_flop_formula(forward_packet):
        return

    @flop_counter.register_flop_formula(forward_packet)
    def _fwd_flops(q_shape, k_shape, v_shape, *args, out_shape=None,
                   **kwargs):
        return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)

    def _bwd_flops(dout_shape, q_shape, k_shape, v_shape, *args,
                   out_shape=None, **kwargs):
        return flop_counter.sdpa_backward_flop_count(dout_shape, q_shape,
                                                     k_shape, v_shape)

    # the packed backwards: the same FLOPs, the gradients in other layouts
    for packet in (backward_packet, ) + packed_backward_packets:
        flop_counter.register_flop_formula(packet)(_bwd_flops)
