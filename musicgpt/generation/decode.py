"""Generation: a prefill of the prompt, then one KV-cached decode step per new token.

`generate_stream` is the one generation loop; `generate` collects what it yields. Both take a
(batch, T) prompt: every row has the same length, so the rows share their positions.

Continuations longer than the context slide a window. Tokens sit at positions 0, 1, ... of the
window. When the window would grow past `block_size` tokens, it is cut to its last
`block_size - window_shift` tokens, which are run again (re-prefilled) at positions 0.. so the
model always sees positions it was trained on, and decoding goes on from there. The uncached
path (`use_cache=False`) cuts its window at exactly the same steps, so both see the same context.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from musicgpt.generation.sampling import SamplingError, check_sampling_args, next_token
from musicgpt.model.gpt import GPT, ModelInputError
from musicgpt.tokenizers.base import LogitsMask


def prefill(model: GPT, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Run idx (B, T) at positions `input_pos` (T,) into the KV cache; logits of the last one (B, V)."""
    return model(idx, input_pos, validate=False)[:, -1]


def decode_step(model: GPT, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """One new token per row, token (B,) at position `input_pos` (1,), through the cache -> logits (B, V)."""
    return model(token.view(-1, 1), input_pos, validate=False)[:, -1]


def compiled_decode_step(model: GPT) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`decode_step` for this model through torch.compile, built once and kept on the model.

    On CPU: inductor with the weights frozen into the graph (prepacked for oneDNN, which runs bf16
    on AMX where the CPU has it), max-autotune GEMMs and the C++ wrapper. On CUDA: max-autotune
    with CUDA graphs. Compiling takes seconds to a minute, and again for each new batch size or
    cache length. Frozen weights are constants of the compiled code, so the step is rebuilt
    whenever a parameter changed (its storage, dtype or version counter) since it was compiled.
    """
    key = tuple((p.data_ptr(), p.dtype, p._version) for p in model.parameters())
    cached = model.__dict__.get("_compiled_decode_step")
    if cached is not None and cached[0] == key:
        return cached[1]

    def step(token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return decode_step(model, token, input_pos)

    if model.transformer.wte.weight.device.type == "cuda":
        compiled = torch.compile(step, mode="max-autotune", fullgraph=True, dynamic=False)
    else:
        inner = torch.compile(
            step, fullgraph=True, dynamic=False, options={"max_autotune": True, "cpp_wrapper": True}
        )

        def compiled(token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
            # Freezing is read outside torch.compile's `options`; patching it around each call
            # (compiles happen inside calls) keeps it from being a process-wide setting.
            with torch._inductor.config.patch(freezing=True):
                return inner(token, input_pos)

    model.__dict__["_compiled_decode_step"] = (key, compiled)
    return compiled


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    stop_tokens: int | Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    logits_mask: LogitsMask | None = None,
    window_shift: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Continue the prompt idx (B, T); return it with the new tokens, (B, T + n_new), int64.

    n_new is max_new_tokens, or fewer when every row has emitted a stop token. See
    `generate_stream` for the arguments.
    """
    steps = list(
        generate_stream(
            model, idx, max_new_tokens, temperature, top_k, top_p, greedy,
            stop_tokens, generator, use_cache, logits_mask, window_shift, compile,
        )
    )  # fmt: skip
    prompt = idx.to(device=model.transformer.wte.weight.device, dtype=torch.long)
    if not steps:
        return prompt.clone()
    return torch.cat([prompt, torch.stack(steps, dim=1)], dim=1)


def generate_stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    stop_tokens: int | Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    logits_mask: LogitsMask | None = None,
    window_shift: int | None = None,
    compile: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens one step at a time, each a (B,) int64 tensor.

    idx: (B, T) prompt of token ids; a 1-D prompt is an error (use `idx[None]` for one row).
    Sampling: see `musicgpt.generation.sampling` (mask -> temperature -> top-k -> top-p -> sample);
    `greedy=True` or temperature 0 takes the argmax. `generator` seeds the draws: the same seed
    gives the same tokens.
    stop_tokens: a row that emits one is finished; it keeps emitting that same token while the
    other rows go on, and the iteration ends once every row has finished.
    use_cache: True decodes through the static KV cache (set up for this batch and length, and left
    in place for the next call; `model.clear_cache()` frees it); False runs the whole window every
    step (the slow reference).
    logits_mask: a grammar (`musicgpt.tokenizers.base.LogitsMask`): `start(prompt)` once, then
    `allowed()` before and `advance(tokens)` after every step.
    window_shift: how far the window slides when the context is full (default block_size // 4).
    compile: run the decode steps through `compiled_decode_step` (with use_cache only). Worth it for
    long continuations: compiling costs seconds; bf16 weights (`model.to(torch.bfloat16)`) gain most.

    The model runs in eval mode under torch.inference_mode; its train/eval mode is restored at the
    end. Bad arguments raise at the call, before any iteration.
    """
    model.check_input(idx)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ModelInputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    check_sampling_args(temperature, top_k, top_p)
    block_size = model.config.block_size
    if window_shift is None:
        window_shift = max(1, block_size // 4)
    if not 1 <= window_shift < block_size:
        raise ModelInputError(
            f"window_shift must be in 1..{block_size - 1} (block_size - 1), got {window_shift!r}"
        )
    device = model.transformer.wte.weight.device
    stops = _stop_tensor(stop_tokens, model.config.vocab_size, device)
    return _stream(
        model, idx.to(device=device, dtype=torch.long), max_new_tokens, temperature, top_k, top_p, greedy,
        stops, generator, use_cache, logits_mask, window_shift, compile,
    )  # fmt: skip


@torch.inference_mode()  # applied around each resumption, so the caller's code is not in inference mode
def _stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
    stops: torch.Tensor | None,
    generator: torch.Generator | None,
    use_cache: bool,
    logits_mask: LogitsMask | None,
    window_shift: int,
    compile: bool,
) -> Iterator[torch.Tensor]:
    if max_new_tokens == 0:
        return
    was_training = model.training
    model.eval()
    try:
        B, T = idx.shape
        block_size = model.config.block_size
        keep = block_size - window_shift  # window length right after a slide
        tokens = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=idx.device)  # the whole history
        tokens[:, :T] = idx
        if use_cache:
            step = compiled_decode_step(model) if compile else functools.partial(decode_step, model)
            cache_len = min(block_size, T + max_new_tokens)
            model.setup_cache(B, cache_len)
            positions = torch.arange(cache_len, device=idx.device)  # sliced into views: no per-step tensors
            logits = prefill(model, idx, positions[:T])
            n_cached = T
        else:
            start = 0  # the window is tokens[:, start:n]
            logits = model(idx, validate=False)[:, -1]
        if logits_mask is not None:
            logits_mask.start(idx.cpu().numpy())
        finished = stop_emitted = None
        if stops is not None:
            finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
            stop_emitted = torch.zeros(B, dtype=torch.long, device=idx.device)

        for i in range(max_new_tokens):
            allowed = _allowed(logits_mask, logits) if logits_mask is not None else None
            tok = next_token(logits, temperature, top_k, top_p, greedy, allowed, generator)
            if stops is not None:
                tok = torch.where(finished, stop_emitted, tok)  # finished rows repeat their stop token
                stop_emitted = tok
                finished = finished | torch.isin(tok, stops)
            tokens[:, T + i] = tok
            if logits_mask is not None:
                logits_mask.advance(tok.cpu().numpy())
            yield tok
            if i == max_new_tokens - 1 or (finished is not None and bool(finished.all())):
                return
            n = T + i + 1  # tokens so far
            if use_cache:
                if n_cached == cache_len:  # full (only when cache_len == block_size): slide the window
                    logits = prefill(model, tokens[:, n - keep : n], positions[:keep])
                    n_cached = keep
                else:
                    logits = step(tok, positions[n_cached : n_cached + 1])
                    n_cached += 1
            else:
                if n - start > block_size:
                    start = n - keep
                logits = model(tokens[:, start:n], validate=False)[:, -1]
    finally:
        model.train(was_training)


def _allowed(logits_mask: LogitsMask, logits: torch.Tensor) -> torch.Tensor:
    allowed = np.asarray(logits_mask.allowed())
    if allowed.dtype != np.bool_ or allowed.shape != tuple(logits.shape):
        raise SamplingError(
            f"logits_mask.allowed() must return a bool array of shape {tuple(logits.shape)}, "
            f"got {allowed.dtype} {allowed.shape}"
        )
    return torch.from_numpy(allowed).to(logits.device)


def _stop_tensor(
    stop_tokens: int | Iterable[int] | None, vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    if stop_tokens is None:
        return None
    ids = [stop_tokens] if isinstance(stop_tokens, (int, np.integer)) else list(stop_tokens)
    bad = [t for t in ids if not isinstance(t, (int, np.integer)) or not 0 <= t < vocab_size]
    if not ids or bad:
        raise ModelInputError(f"stop_tokens must be token ids in 0..{vocab_size - 1}, got {stop_tokens!r}")
    return torch.tensor([int(t) for t in ids], device=device)
