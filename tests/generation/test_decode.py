"""generate / generate_stream: cache parity, seeds, stop tokens, the grammar hook, sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TEXT_DIR

from musicgpt.errors import MusicGPTError
from musicgpt.generation.decode import generate, generate_stream
from musicgpt.generation.sampling import SamplingError
from musicgpt.model.gpt import GPT, GPTConfig, ModelInputError


def prompt(batch: int, length: int) -> torch.Tensor:
    """Real text bytes as prompts, one stretch of Sherlock Holmes per row."""
    data = (TEXT_DIR / "sherlock.txt").read_bytes()[5000 : 5000 + batch * length]
    return torch.tensor(list(data), dtype=torch.long).view(batch, length)


def lively(config: GPTConfig, seed: int) -> GPT:
    """A random model whose greedy continuations vary. With GPT-2's init (std 0.02) a random model
    repeats one token forever, which would make cache parity trivially true; std 0.2 does not."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model


def distinct(tokens: torch.Tensor) -> int:
    return len(set(tokens.flatten().tolist()))


@pytest.fixture(scope="module")
def tiny() -> GPT:
    return lively(GPTConfig.preset("music-tiny"), seed=0)  # block_size 256, vocab 390


@pytest.fixture(scope="module")
def short_context() -> GPT:
    return lively(GPTConfig.preset("music-tiny", block_size=32), seed=1)


@pytest.mark.parametrize("batch", [1, 4])
def test_cached_and_uncached_greedy_give_the_same_tokens(tiny, batch):
    idx = prompt(batch, 16)
    cached = generate(tiny, idx, 240, greedy=True)  # 16 + 240 = 256: the whole context
    uncached = generate(tiny, idx, 240, greedy=True, use_cache=False)
    assert cached.shape == (batch, 256)
    assert torch.equal(cached[:, :16], idx)
    assert all(distinct(row) > 20 for row in cached[:, 16:])
    assert torch.equal(cached, uncached)


def test_stream_yields_one_row_of_tokens_per_step_and_generate_collects_them(tiny):
    idx = prompt(3, 10)
    steps = list(generate_stream(tiny, idx, 25, greedy=True))
    assert len(steps) == 25 and all(s.shape == (3,) and s.dtype == torch.long for s in steps)
    assert torch.equal(torch.cat([idx, torch.stack(steps, 1)], 1), generate(tiny, idx, 25, greedy=True))
    assert not torch.is_inference_mode_enabled()  # the caller's code between steps is not in inference mode


def test_same_seed_same_tokens(tiny):
    idx = prompt(2, 12)

    def run(seed, **kw):
        return generate(tiny, idx, 60, temperature=0.9, top_k=50, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    assert torch.equal(run(7), run(7, use_cache=False))  # both paths draw the same way


def test_top_k_one_is_greedy(tiny):
    idx = prompt(2, 12)
    sampled = generate(tiny, idx, 40, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, generate(tiny, idx, 40, greedy=True))
    assert torch.equal(generate(tiny, idx, 40, temperature=0), generate(tiny, idx, 40, greedy=True))


def test_rows_that_stop_repeat_their_stop_token_until_all_have_stopped(tiny):
    idx = prompt(3, 8)
    free = generate(tiny, idx, 80, greedy=True)
    stop = int(free[0, 8 + 5])  # row 0 emits this at step 5 (or earlier)

    def expected_rows(n_new):
        rows = []
        for row in free[:, 8:].tolist():
            first = row.index(stop) if stop in row[:n_new] else None
            rows.append(row[:n_new] if first is None else row[: first + 1] + [stop] * (n_new - first - 1))
        return rows

    out = generate(tiny, idx, 80, greedy=True, stop_tokens=[stop])
    firsts = [row.index(stop) if stop in row else None for row in free[:, 8:].tolist()]
    n_new = 80 if None in firsts else max(firsts) + 1
    assert out.shape == (3, 8 + n_new)
    assert out[:, 8:].tolist() == expected_rows(n_new)
    # every row stops: the loop ends as soon as the last one has
    same = idx[:1].repeat(2, 1)
    both = generate(tiny, same, 80, greedy=True, stop_tokens=stop)
    assert both.shape == (2, 8 + firsts[0] + 1) and (both[:, -1] == stop).all()


class EvenTokensOnly:
    """A grammar allowing only even ids; it records what the sampler told it."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.prompt = None
        self.advanced: list[np.ndarray] = []

    def start(self, prompt: np.ndarray) -> None:
        self.prompt = prompt.copy()
        self.batch = prompt.shape[0]

    def allowed(self) -> np.ndarray:
        allowed = np.zeros((self.batch, self.vocab_size), dtype=bool)
        allowed[:, ::2] = True
        return allowed

    def advance(self, tokens: np.ndarray) -> None:
        self.advanced.append(tokens.copy())


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_logits_mask_is_obeyed(tiny, use_cache):
    idx = prompt(2, 10)
    mask = EvenTokensOnly(390)
    out = generate(tiny, idx, 50, temperature=1.5, logits_mask=mask, use_cache=use_cache,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (out[:, 10:] % 2 == 0).all()
    assert np.array_equal(mask.prompt, idx.numpy())
    assert np.array_equal(np.stack(mask.advanced, 1), out[:, 10:].numpy())
    unmasked = generate(tiny, idx, 50, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert (unmasked[:, 10:] % 2 == 1).any()  # without the mask odd tokens do come


def test_a_mask_of_the_wrong_shape_is_refused(tiny):
    class WrongShape(EvenTokensOnly):
        def allowed(self):
            return np.ones((self.batch, 10), dtype=bool)

    with pytest.raises(SamplingError, match=r"allowed\(\) must return a bool array of shape \(2, 390\)"):
        generate(tiny, prompt(2, 5), 3, logits_mask=WrongShape(390))


def naive_windowed_greedy(model: GPT, idx: torch.Tensor, n_new: int, shift: int) -> torch.Tensor:
    """The documented window rule, step by step with no cache: when the context would pass
    block_size tokens it restarts from its last block_size - shift tokens, at position 0."""
    block = model.config.block_size
    tokens, start = idx.clone(), 0
    with torch.no_grad():
        for _ in range(n_new):
            if tokens.shape[1] - start > block:
                start = tokens.shape[1] - (block - shift)
            nxt = model(tokens[:, start:])[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], 1)
    return tokens


@pytest.mark.parametrize("shift", [1, 8, 31])
def test_continuations_beyond_the_context_slide_a_window(short_context, shift):
    idx = prompt(2, 20)
    out = generate(short_context, idx, 150, greedy=True, window_shift=shift)  # context is 32
    assert out.shape == (2, 170) and distinct(out[:, 20:]) > 20
    assert torch.equal(out, naive_windowed_greedy(short_context, idx, 150, shift))
    assert torch.equal(
        out, generate(short_context, idx, 150, greedy=True, window_shift=shift, use_cache=False)
    )


def test_default_window_shift_is_a_quarter_of_the_context(short_context):
    idx = prompt(1, 32)  # a prompt that fills the context: the very first new token slides
    out = generate(short_context, idx, 70, greedy=True)
    assert torch.equal(out, naive_windowed_greedy(short_context, idx, 70, shift=8))


def test_generation_restores_train_mode_and_needs_no_grad(tiny):
    tiny.train()
    try:
        generate(tiny, prompt(1, 5), 5)
        assert tiny.training
    finally:
        tiny.eval()


def test_zero_new_tokens_returns_the_prompt(tiny):
    idx = prompt(2, 5)
    assert torch.equal(generate(tiny, idx, 0), idx)
    assert list(generate_stream(tiny, idx, 0)) == []


@pytest.mark.parametrize(
    "idx, kwargs, error, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), {}, ModelInputError, "idx is empty"),
        (torch.zeros(1, 257, dtype=torch.long), {}, ModelInputError, "longer than the model's context"),
        (torch.tensor([[1, 2, 400]]), {}, ModelInputError, r"token ids must be in 0..389"),
        (torch.tensor([1, 2, 3]), {}, ModelInputError, r"\(batch, T\)"),
        (torch.tensor([[1, 2]]), {"top_p": 0.0}, SamplingError, r"top_p must be in \(0, 1\]"),
        (torch.tensor([[1, 2]]), {"top_p": 1.01}, SamplingError, r"top_p must be in \(0, 1\]"),
        (torch.tensor([[1, 2]]), {"temperature": -1.0}, SamplingError, "temperature must be >= 0"),
        (torch.tensor([[1, 2]]), {"top_k": 0}, SamplingError, "top_k must be an integer >= 1"),
        (torch.tensor([[1, 2]]), {"stop_tokens": [390]}, ModelInputError, "stop_tokens must be token ids"),
        (torch.tensor([[1, 2]]), {"window_shift": 256}, ModelInputError, "window_shift must be in 1..255"),
        (
            torch.tensor([[1, 2]]),
            {"max_new_tokens": -1},
            ModelInputError,
            "max_new_tokens must be an integer >= 0",
        ),
    ],
)
def test_bad_input_fails_at_the_call_with_a_clear_error(tiny, idx, kwargs, error, message):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=message) as info:
        generate_stream(tiny, idx, **kwargs)  # raises before any iteration
    assert isinstance(info.value, MusicGPTError)
    with pytest.raises(error, match=message):
        generate(tiny, idx, **kwargs)


# both raised inside inductor, not by musicgpt
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_compiled_decode_step_gives_the_eager_tokens():
    torch.manual_seed(2)
    model = GPT(GPTConfig.preset("music-tiny", n_layer=1)).eval()
    idx = prompt(2, 12)
    eager = generate(model, idx, 60, greedy=True)
    assert torch.equal(generate(model, idx, 60, greedy=True, compile=True), eager)
    with torch.no_grad():  # the frozen weights are recompiled when the weights change
        model.transformer.wte.weight.mul_(2.0)
    assert torch.equal(
        generate(model, idx, 60, greedy=True, compile=True), generate(model, idx, 60, greedy=True)
    )


def test_the_compiled_step_is_kept_until_a_weight_changes():
    """torch.compile is lazy, so this builds steps without compiling any: the step is the same object
    while the weights stay, and a new one after each kind of write to them."""
    from musicgpt.generation.decode import compiled_decode_step

    torch.manual_seed(3)
    model = GPT(GPTConfig.preset("music-tiny", n_layer=1)).eval()
    first = compiled_decode_step(model)
    assert compiled_decode_step(model) is first
    list(generate_stream(model, prompt(1, 4), 3, greedy=True))  # running the model writes no weight
    assert compiled_decode_step(model) is first

    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(2.0)  # in place, under no_grad
    second = compiled_decode_step(model)
    assert second is not first and compiled_decode_step(model) is second
    model.load_state_dict(GPT(model.config).state_dict())  # other values copied into the same tensors
    third = compiled_decode_step(model)
    assert third is not second
    model.to(torch.bfloat16)  # new storage, another dtype
    assert compiled_decode_step(model) is not third
