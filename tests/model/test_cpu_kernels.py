"""The compiled bf16 CPU training kernels: as accurate as PyTorch's own, used only where they apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import musicgpt.model.cpu_kernels as kernels
from musicgpt.model.cpu_kernels import causal_attention, gelu_tanh, use_compiled_cpu_kernels
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.model.positions import relative_logits_causal


@pytest.fixture(autouse=True)
def _kernels_on():
    use_compiled_cpu_kernels(True)
    yield
    use_compiled_cpu_kernels(True)


def _bf16_within_one_ulp(actual: torch.Tensor, reference: torch.Tensor) -> None:
    """Every element within one bf16 step (2**-7 relative) of the float64 reference."""
    error = (actual.double() - reference).abs()
    bound = reference.abs() * 2**-7 + 1e-6
    worst = (error / bound).max().item()
    assert worst <= 1.0, f"{worst:.2f} bf16 steps off the float64 reference"


def test_gelu_tanh_forward_and_backward_are_within_one_bf16_step_of_float64():
    torch.manual_seed(0)
    x = (torch.randn(4, 96, 64) * 3).to(torch.bfloat16).requires_grad_()
    grad = torch.randn(4, 96, 64).to(torch.bfloat16)
    y = gelu_tanh(x)
    assert y.grad_fn.name() == "_GeluTanhCPUBackward"  # the compiled kernel, not ATen's
    y.backward(grad)

    x64 = x.detach().double().requires_grad_()
    y64 = F.gelu(x64, approximate="tanh")
    y64.backward(grad.double())
    _bf16_within_one_ulp(y.detach(), y64.detach())
    _bf16_within_one_ulp(x.grad, x64.grad)


def test_gelu_tanh_is_aten_s_where_the_kernels_do_not_apply():
    x = torch.randn(3, 50)
    assert torch.equal(gelu_tanh(x), F.gelu(x, approximate="tanh"))  # fp32
    xb = x.to(torch.bfloat16)
    assert torch.equal(gelu_tanh(xb), F.gelu(xb, approximate="tanh"))  # no gradient needed
    use_compiled_cpu_kernels(False)
    xg = xb.clone().requires_grad_()
    assert gelu_tanh(xg).grad_fn.name() == "GeluBackward0"


def _attention_grads(fn, q, k, v, grad, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(grad.to(dtype))
    return out.detach(), [t.grad.double() for t in leaves]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("T", [300, 64])  # 300: two query blocks, the second one partial
def test_causal_attention_gradients_are_as_accurate_as_sdpa_s(T):
    torch.manual_seed(0)
    q, k, v, grad = (torch.randn(2, 3, T, 16, dtype=torch.float64) for _ in range(4))

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    _, reference = _attention_grads(sdpa, q, k, v, grad, torch.float64)
    sdpa_out, stock = _attention_grads(sdpa, q, k, v, grad, torch.bfloat16)
    ours_out, ours = _attention_grads(causal_attention, q, k, v, grad, torch.bfloat16)

    assert torch.equal(ours_out, sdpa_out)  # the forward is SDPA's own kernel
    for name, mine, theirs, exact in zip("qkv", ours, stock, reference, strict=True):
        error, stock_error = _relative_error(mine, exact), _relative_error(theirs, exact)
        assert error < 0.01 and error < 2 * stock_error, (name, error, stock_error)


@pytest.mark.parametrize("T, R", [(300, 512), (300, 100)])  # two query blocks; R < T: E[R-1] shared
def test_relative_attention_gradients_are_as_accurate_as_sdpa_s(T, R):
    torch.manual_seed(0)
    q, k, v, grad = (torch.randn(2, 3, T, 16, dtype=torch.float64) for _ in range(4))
    rel_emb = torch.randn(3, R, 16, dtype=torch.float64) * 0.5

    def reference(q, k, v, rel_emb):  # SDPA with the whole (T, T) term as an additive mask
        bias = relative_logits_causal(q, rel_emb) / 4.0
        mask = bias.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))

    def grads(fn, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        e = (
            rel_emb.detach().float().requires_grad_()
            if dtype != torch.float64
            else rel_emb.clone().requires_grad_()
        )
        out = fn(*leaves, e)
        out.backward(grad.to(dtype))
        return out, [t.grad.double() for t in (*leaves, e)]

    exact_out, exact = grads(reference, torch.float64)
    _, stock = grads(reference, torch.bfloat16)
    ours_out, ours = grads(causal_attention, torch.bfloat16)
    assert ours_out.grad_fn.name() == "_CausalAttentionCPUBackward"  # the blockwise kernels
    assert _relative_error(ours_out.detach().double(), exact_out.detach()) < 0.01
    for name, mine, theirs, truth in zip(("q", "k", "v", "rel_emb"), ours, stock, exact, strict=True):
        error, stock_error = _relative_error(mine, truth), _relative_error(theirs, truth)
        assert error < 0.01 and error < 2 * stock_error, (name, error, stock_error)


def test_causal_attention_takes_sdpa_for_dropout_and_inference():
    q, k, v = (torch.randn(1, 2, 8, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    assert causal_attention(q, k, v).grad_fn.name() == "_CausalAttentionCPUBackward"
    assert causal_attention(q, k, v, dropout_p=0.1).grad_fn.name() != "_CausalAttentionCPUBackward"
    with torch.no_grad():
        assert torch.equal(causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_a_failed_compile_warns_once_and_falls_back_to_the_stock_kernels(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setattr(kernels, "_compile_failed", False)  # restored after the test
    monkeypatch.setattr(torch, "compile", no_compiler)
    x = torch.randn(2, 40).to(torch.bfloat16).requires_grad_()
    with pytest.warns(UserWarning, match="compiling _gelu_tanh_forward failed .*no C\\+\\+ compiler"):
        y = gelu_tanh(x)
    assert torch.equal(y, F.gelu(x.detach(), approximate="tanh"))
    assert kernels._compile_failed  # the rest of the run takes PyTorch's kernels without trying again
    assert kernels._enabled  # the user's switch is the user's: a failed compile does not flip it
    assert gelu_tanh(x).grad_fn.name() == "GeluBackward0"


@pytest.mark.parametrize("encoding", ["learned", "relative", "rope"])
def test_a_bf16_training_step_matches_the_stock_kernels(encoding):
    # The stock kernels are the GPU path too: SDPA, with relative attention's term as an additive
    # mask (memory-efficient attention on CUDA), flash attention for learned and rotary positions.
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=390, block_size=300, n_layer=2, n_head=2, n_embd=64, position_encoding=encoding
    )  # 300: two query blocks
    idx = torch.randint(0, 390, (2, 301))

    def loss_and_grads(enabled: bool):
        use_compiled_cpu_kernels(enabled)
        torch.manual_seed(1)
        model = GPT(config)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, 390), idx[:, 1:].reshape(-1))
        loss.backward()
        return loss.item(), {n: p.grad.double() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads(True)
    stock_loss, stock_grads = loss_and_grads(False)
    assert loss == pytest.approx(stock_loss, abs=1e-3)
    for name, grad in grads.items():
        assert _relative_error(grad, stock_grads[name]) < 0.03, name
