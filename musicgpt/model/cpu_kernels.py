"""Faster bf16 training on CPU: attention's backward and GPT-2's GELU, compiled by inductor.

Why this file exists. Profiling a bf16-mixed training step of the 20M music model on 2 CPU cores
(torch 2.13) showed two kernels far slower than the arithmetic they do:

- SDPA's flash-attention backward takes about six times its forward (42 ms against 7 ms for
  8 x 8 heads x 512 tokens x 64), a third of the whole step. The same gradients written as plain
  tensor code over two blocks of queries, compiled so that the exp/mask/multiply chains fuse,
  take about half that time.
- GPT-2's tanh-approximated GELU spends most of its time in `tanh`, which is about four times
  slower than `sigmoid` on this CPU. Since 0.5 * (1 + tanh(z)) = sigmoid(2z), the same function is
  x * sigmoid(2z); compiled into one pass each way it takes half of ATen's forward + backward.

Both give the same values as the kernels they replace up to bf16 rounding; the tests hold them to
float64 references as tightly as the ATen kernels. They are used only where they pay off:
on CPU, in bf16, with gradients needed, no dropout on the attention, and outside a compiled model.
Everything else (GPU, fp32, inference, decoding with the KV cache) runs the stock kernels: in
fp32 training they measured no faster (the 20M and the 256-wide piano model, 2 cores).

Turn them off with `use_compiled_cpu_kernels(False)`. If compiling fails (no C++ compiler, for
example) they warn once and fall back to the stock kernels by themselves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

_enabled = True  # the user's switch: use_compiled_cpu_kernels
_compile_failed = False  # set once if inductor cannot compile here (then the eager code runs)
_compiled: dict[Callable, Callable] = {}  # plain function -> its torch.compile'd version
_QUERY_BLOCK = 256  # rows of the attention score matrix per block: memory is T x 256 per head


def use_compiled_cpu_kernels(enabled: bool = True) -> None:
    """Whether bf16 training on CPU uses this file's kernels (the default) or PyTorch's own."""
    global _enabled
    _enabled = bool(enabled)


def _applies(*tensors: torch.Tensor) -> bool:
    return (
        _enabled
        and not _compile_failed
        and tensors[0].device.type == "cpu"
        and tensors[0].dtype == torch.bfloat16
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
        and not torch.compiler.is_compiling()  # a compiled model fuses (or not) by itself
    )


def _run_compiled(fn: Callable, fallback: Callable, *args):
    """fn compiled (once per function and shape), or `fallback` if compiling is not possible here."""
    global _compile_failed
    if not _compile_failed:
        try:
            if fn not in _compiled:
                _compiled[fn] = torch.compile(fn, dynamic=False)
            return _compiled[fn](*args)
        except Exception as e:  # inductor needs a working C++ toolchain; the stock kernels do not
            _compile_failed = True
            warnings.warn(
                f"compiling {fn.__name__} failed ({type(e).__name__}: {e}); "
                "using PyTorch's own CPU kernels instead",
                stacklevel=3,
            )
    return fallback(*args)


# --- causal attention, with an optional additive bias (relative attention) ----------------------


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal softmax(q kᵀ / sqrt(d) + bias) v for q, k, v of shape (B, n_head, T, head_dim).

    bias (B, n_head, T, T), its upper triangle ignored, is relative attention's logits term. Its
    gradient is the score gradient dS of the backward, which the blockwise backward has at hand;
    SDPA would take its math path for a bias that needs a gradient (every (T, T) matrix in fp32,
    several times over): 2x slower here.
    """
    if dropout_p == 0.0 and _applies(q, k, v, *(() if bias is None else (bias,))):
        return _CausalAttentionCPU.apply(q, k, v, bias)
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    T = q.size(-2)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    mask = bias.masked_fill(~causal, float("-inf")).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class _CausalAttentionCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias):
        # SDPA's own CPU flash kernel (what F.scaled_dot_product_attention runs here), called
        # directly for its log-sum-exp, from which the backward rebuilds the softmax. (No public
        # op returns it on CPU: FlexAttention's return_lse has no CPU backward to pair with.)
        scale = 1.0 / math.sqrt(q.size(-1))
        if bias is not None:
            bias = bias.to(q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, True, attn_mask=bias, scale=scale
        )
        ctx.has_bias = bias is not None
        ctx.save_for_backward(q, k, v, out, lse, *(() if bias is None else (bias,)))
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, *bias = ctx.saved_tensors
        bias = bias[0] if ctx.has_bias else None
        # the eager function is its own fallback: the same arithmetic, unfused
        return _run_compiled(
            _causal_attention_backward, _causal_attention_backward, grad_out, q, k, v, out, lse, bias, ctx.scale
        )


def _causal_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of causal attention, rebuilding the probabilities from the log-sum-exp.

    With S = scale * q kᵀ + bias (causal), P = softmax(S), O = P v and the incoming gradient dO:
      dv = Pᵀ dO,  dP = dO vᵀ,  dS = P * (dP - rowsum(dO * O)),  dbias = dS,
      dq = scale dS k,  dk = scale dSᵀ q.
    A block of queries only meets the keys up to its own last position, so most of the masked
    upper triangle is never computed. Products run in bf16, the softmax arithmetic in fp32.
    """
    T = q.size(2)
    dsum = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # rowsum(dO * O): (B, nh, T, 1)
    dq_blocks = []
    dk = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dbias = None if bias is None else torch.zeros(bias.shape, dtype=q.dtype, device=q.device)
    for start in range(0, T, _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, T)  # queries start..stop-1 see keys 0..stop-1
        q_i, dout_i = q[:, :, start:stop], grad_out[:, :, start:stop]
        k_i, v_i = k[:, :, :stop], v[:, :, :stop]
        scores = torch.matmul(q_i, k_i.transpose(-1, -2)).float() * scale
        if bias is not None:
            scores = scores + bias[:, :, start:stop, :stop].float()
        visible = torch.ones(stop - start, stop, dtype=torch.bool, device=q.device).tril(start)
        probs = torch.where(visible, torch.exp(scores - lse[:, :, start:stop, None]), 0.0)
        dv[:, :, :stop] += torch.matmul(probs.to(q.dtype).transpose(-1, -2), dout_i)
        dprobs = torch.matmul(dout_i, v_i.transpose(-1, -2)).float()
        dscores = probs * (dprobs - dsum[:, :, start:stop])
        if dbias is not None:
            dbias[:, :, start:stop, :stop] = dscores.to(q.dtype)
        dscores = (dscores * scale).to(q.dtype)
        dq_blocks.append(torch.matmul(dscores, k_i))
        dk[:, :, :stop] += torch.matmul(dscores.transpose(-1, -2), q_i)
    return torch.cat(dq_blocks, dim=2), dk.to(q.dtype), dv.to(q.dtype), dbias


# --- GPT-2's GELU ----------------------------------------------------------------------------

_GELU_A = 2 * math.sqrt(2 / math.pi)  # tanh(z) = 2 sigmoid(2z) - 1, z = sqrt(2/pi) (x + 0.044715 x^3)
_GELU_B = 0.044715


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (`F.gelu(x, approximate="tanh")`)."""
    if _applies(x):
        return _GeluTanhCPU.apply(x)
    return F.gelu(x, approximate="tanh")


class _GeluTanhCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _run_compiled(_gelu_tanh_forward, lambda x: F.gelu(x, approximate="tanh"), x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _run_compiled(_gelu_tanh_backward, _gelu_tanh_backward, grad_out, x)


def _gelu_tanh_forward(x: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.sigmoid(_GELU_A * (xf + _GELU_B * xf * xf * xf))).to(x.dtype)


def _gelu_tanh_backward(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # d/dx [x s(u)] = s + x s (1 - s) u',  s = sigmoid(u),  u = A (x + B x^3),  u' = A (1 + 3 B x^2)
    xf = x.float()
    s = torch.sigmoid(_GELU_A * (xf + _GELU_B * xf * xf * xf))
    slope = s + xf * s * (1 - s) * _GELU_A * (1 + 3 * _GELU_B * xf * xf)
    return (grad_out.float() * slope).to(grad_out.dtype)
