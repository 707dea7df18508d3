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

from musicgpt.model.positions import relative_logits_causal, skew, unskew

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


# --- causal attention, with relative attention's term if the model has one ----------------------


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_emb: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal softmax(q kᵀ / sqrt(d) + rel) v for q, k, v of shape (B, n_head, T, head_dim).

    rel_emb (n_head, R, head_dim): relative attention's distance embeddings E, which add
    rel[i, j] = q_i · E[min(i - j, R - 1)] / sqrt(d) to the logits (positions.py). On CPU in bf16
    training that term is computed inside the blockwise kernels below, a block of queries at a
    time, never as a (T, T) tensor; elsewhere it is built whole (`relative_logits_causal`) and
    given to SDPA as an additive mask.
    """
    extra = () if rel_emb is None else (rel_emb,)
    if dropout_p == 0.0 and _applies(q, k, v, *extra):
        return _CausalAttentionCPU.apply(q, k, v, rel_emb)
    if rel_emb is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    T = q.size(-2)
    bias = relative_logits_causal(q, rel_emb) * (1.0 / math.sqrt(q.size(-1)))
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    mask = bias.masked_fill(~causal, float("-inf")).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def _farthest_first(T: int, R: int, device: torch.device) -> torch.Tensor:
    """Indices into E of distances T-1, ..., 1, 0 (farther than R-1 share the last)."""
    return torch.arange(T - 1, -1, -1, device=device).clamp(max=R - 1)


class _CausalAttentionCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rel_emb):
        scale = 1.0 / math.sqrt(q.size(-1))
        e = index = None
        if rel_emb is None:
            # SDPA's own CPU flash kernel (what F.scaled_dot_product_attention runs here), called
            # directly for its log-sum-exp, from which the backward rebuilds the softmax. (No
            # public op returns it on CPU.)
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, True, scale=scale
            )
        else:
            # Relative attention: flash attention would need the whole (T, T) bias as a mask (and
            # runs slower with one); the blockwise forward adds each block's part as it goes.
            index = _farthest_first(q.size(2), rel_emb.size(1), q.device)
            e = rel_emb[:, index].to(q.dtype)  # (nh, T, hs), farthest distance first
            out, lse = _run_compiled(_causal_attention_forward, _causal_attention_forward, q, k, v, e, scale)
        ctx.save_for_backward(q, k, v, out, lse, *(() if e is None else (e, index)))
        ctx.scale = scale
        ctx.rel_shape = None if rel_emb is None else (rel_emb.shape, rel_emb.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, *rel = ctx.saved_tensors
        e, index = rel if rel else (None, None)
        # the eager function is its own fallback: the same arithmetic, unfused
        dq, dk, dv, de = _run_compiled(
            _causal_attention_backward, _causal_attention_backward, grad_out, q, k, v, out, lse, e, ctx.scale
        )
        d_rel = None
        if de is not None:  # back from "farthest first" to E's rows (clamped distances add up)
            shape, dtype = ctx.rel_shape
            d_rel = torch.zeros(shape, dtype=torch.float32, device=q.device).index_add_(1, index, de)
            d_rel = d_rel.to(dtype)
        return dq, dk, dv, d_rel


def _block_scores(q_i, k_i, e_i, start: int, scale: float) -> torch.Tensor:
    """fp32 logits of queries start..stop-1 against keys 0..stop-1, -inf above the diagonal."""
    stop = k_i.size(2)
    scores = torch.matmul(q_i, k_i.transpose(-1, -2)).float()
    if e_i is not None:  # q · E[i - j], skewed from (query, distance) into (query, key)
        scores = scores + skew(torch.matmul(q_i, e_i.transpose(-1, -2))).float()
    visible = torch.ones(stop - start, stop, dtype=torch.bool, device=q_i.device).tril(start)
    return torch.where(visible, scores * scale, float("-inf"))


def _causal_attention_forward(q, k, v, e, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention with the relative term, blockwise: (out (B, nh, T, hs), lse (B, nh, T) fp32)."""
    T = q.size(2)
    outs, lses = [], []
    for start in range(0, T, _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, T)
        scores = _block_scores(q[:, :, start:stop], k[:, :, :stop], e[:, T - stop :], start, scale)
        lse = torch.logsumexp(scores, dim=-1)
        probs = torch.exp(scores - lse[..., None])
        outs.append(torch.matmul(probs.to(q.dtype), v[:, :, :stop]))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _causal_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    e: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of causal attention, rebuilding the probabilities from the log-sum-exp.

    With S = scale (q kᵀ + skew(q Eᵀ)) (causal), P = softmax(S), O = P v and the incoming gradient dO:
      dv = Pᵀ dO,  dP = dO vᵀ,  dS = P * (dP - rowsum(dO * O)),
      dq = scale (dS k + unskew(dS) E),  dk = scale dSᵀ q,  dE = scale unskew(dS)ᵀ q.
    A block of queries only meets the keys up to its own last position, so most of the masked
    upper triangle is never computed. Products run in bf16, the softmax arithmetic in fp32.
    e (nh, T, hs) is E by distance, farthest first; None: no relative term.
    """
    T = q.size(2)
    dsum = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # rowsum(dO * O): (B, nh, T, 1)
    dq_blocks = []
    dk = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    de = None if e is None else torch.zeros(e.shape, dtype=torch.float32, device=q.device)
    for start in range(0, T, _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, T)  # queries start..stop-1 see keys 0..stop-1
        q_i, dout_i = q[:, :, start:stop], grad_out[:, :, start:stop]
        k_i, v_i = k[:, :, :stop], v[:, :, :stop]
        e_i = None if e is None else e[:, T - stop :]  # distances stop-1 .. 0
        scores = _block_scores(q_i, k_i, e_i, start, scale)
        probs = torch.exp(scores - lse[:, :, start:stop, None])  # 0 where masked
        dv[:, :, :stop] += torch.matmul(probs.to(q.dtype).transpose(-1, -2), dout_i)
        dprobs = torch.matmul(dout_i, v_i.transpose(-1, -2)).float()
        dscores = (probs * (dprobs - dsum[:, :, start:stop]) * scale).to(q.dtype)
        dq_i = torch.matmul(dscores, k_i).float()
        dk[:, :, :stop] += torch.matmul(dscores.transpose(-1, -2), q_i)
        if e_i is not None:
            d_by_distance = unskew(dscores)  # (B, nh, blk, stop)
            dq_i = dq_i + torch.matmul(d_by_distance, e_i)
            de[:, T - stop :] += torch.matmul(d_by_distance.transpose(-1, -2), q_i).float().sum(0)
        dq_blocks.append(dq_i.to(q.dtype))
    return torch.cat(dq_blocks, dim=2), dk.to(q.dtype), dv.to(q.dtype), de


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
