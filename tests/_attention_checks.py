"""What the tests of the two CPU attention operators share
(test_onednn_attention.py, test_cpu_attention.py; test_gradcheck.py uses
:func:`ops_dispatched`)."""
import torch


def ops_dispatched(fn, shapes=False):
    """``(fn(), names of the aten / custom operators it dispatched)``; with
    ``shapes``, ``(name, dimensions of its first output)`` pairs."""
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not shapes:
                seen.append(str(func))
                return func(*args, **(kwargs or {}))
            out = func(*args, **(kwargs or {}))
            first = out[0] if isinstance(out, (tuple, list)) and out else out
            seen.append((str(func), first.dim() if isinstance(
                first, torch.Tensor) else 0))
            return out

    with Log():
        out = fn()
    return out, seen


def check_token_major(attention, q, k, v):
    """``attention``'s output is (B, L, H, d)-contiguous, its heads merged
    into (B, L, H d) as a view; returns the q / k / v gradients."""
    out = attention(q, k, v)
    b, h, n, d = out.shape
    assert out.transpose(1, 2).is_contiguous()
    merged = out.transpose(1, 2).reshape(b, n, h * d)
    assert merged.data_ptr() == out.data_ptr()
    return torch.autograd.grad(out, (q, k, v), torch.randn_like(out))


def qkv(b, h, lq, lk, d, seed=0, strided=False):
    """q (B, H, Lq, d), k / v (B, H, Lk, d) needing gradients; ``strided``:
    the heads of one packed (B, L, 3 H d) tensor, as the experts split them
    (then Lk = Lq)."""
    g = torch.Generator().manual_seed(seed)
    if strided:
        packed = torch.randn(b, lq, 3 * h * d, generator=g)
        q, k, v = (t.reshape(b, lq, h, d).transpose(1, 2)
                   for t in packed.chunk(3, dim=-1))
        return [t.detach().requires_grad_() for t in (q, k, v)]
    q = torch.randn(b, h, lq, d, generator=g)
    k = torch.randn(b, h, lk, d, generator=g)
    v = torch.randn(b, h, lk, d, generator=g)
    return [t.requires_grad_() for t in (q, k, v)]


def forward_runs_per_checkpointed_step(attention, calls, d):
    """``{keeps attention: forward calls}`` of one checkpointed region
    around ``attention`` (whose forward calls append to ``calls``) under
    the save policy that keeps attention outputs and the one that does not:
    {True: 1, False: 2} when the operator is kept like the fused kernels."""
    from cast_mmaction.models import checkpointing
    q, k, v = qkv(1, 2, 30, 30, d)
    w = torch.randn(d, d, requires_grad=True)

    def region(q, k, v):
        return attention(q @ w, k, v).sin()

    out = {}
    for keep in (True, False):
        calls.clear()
        y = checkpointing.checkpoint(
            region, q, k, v, policy=checkpointing.SavePolicy(attention=keep))
        y.sum().backward()
        out[keep] = len(calls)
    return out


def check_kept_log_sum_exp(op, d):
    """``op(q, k, v, scale, with_lse)`` keeps the natural log-sum-exp of
    ``scale q k^T`` (what the fused kernel keeps, whatever base its own
    exponentials use), its output is the softmax's, and without
    ``with_lse`` it keeps none."""
    import torch
    q, k, v = (t.detach() for t in qkv(2, 3, 70, 50, d))
    scale = d ** -0.5
    out, lse = op(q, k, v, scale, True)
    # the truth in float64 (an fp32 reference adds its own rounding, which
    # varies with MKL's code path)
    scores = (q.double() * scale) @ k.double().transpose(-1, -2)
    torch.testing.assert_close(lse.double(), torch.logsumexp(scores, -1),
                               rtol=1e-6, atol=2e-6)
    torch.testing.assert_close(out.double(), scores.softmax(-1) @ v.double(),
                               rtol=1e-5, atol=1e-5)
    assert op(q, k, v, scale, False)[1].numel() == 0
