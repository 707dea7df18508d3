"""Generation: a prefill of the prompt, then one KV-cached decode step per new token.

`generate_stream` is the one generation loop; `generate` collects what it yields. Both take a
(batch, T) prompt: every row has the same length, so the rows share their positions. How each
token is chosen is one `SamplingConfig` (or its fields as keyword arguments).

The model sees at most `max_context` tokens (default `block_size`). How it reads them is one
small object per decoding mode, each with `prefill(prompt)` and `step(token, history)`:
* `SlidingCache`, learned positions (GPT-2): when the window would grow past `max_context`
  tokens, it is cut to its last `max_context - window_shift` tokens, which are run again
  (re-prefilled) at positions 0.. so the model always sees positions it was trained on.
* `RingCache`, relative attention: the KV cache is a ring buffer of `max_context` slots; each new
  token overwrites the oldest, with no re-prefill (a relative model does not care where its
  window starts), and `max_context` may exceed the training window `block_size`.
* `Uncached` (`use_cache=False`): the same from scratch every step, the slow reference that the
  cached modes must equal (and the benchmark's baseline): the same windows for learned positions;
  for relative attention the whole history with sliding-window attention (each token sees the
  last `max_context` in every layer: a ring buffer's keys were computed when their tokens were new).
The loop in `_stream` (sampling, the grammar, stop tokens, the prompt cache) is the same for all.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from musicgpt.generation.prompt_cache import PromptCache
from musicgpt.generation.sampling import SamplingConfig, SamplingError, next_token
from musicgpt.model.gpt import GPT, ModelInputError
from musicgpt.tokenizers.base import LogitsMask


def prefill(model: GPT, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Run idx (B, T) at positions `input_pos` (T,) into the KV cache; logits of the last one (B, V)."""
    return model(idx, input_pos, validate=False, last_only=True)[:, -1]


def decode_step(model: GPT, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """One new token per row, token (B,) at position `input_pos` (1,), through the cache -> logits (B, V)."""
    return model(token.view(-1, 1), input_pos, validate=False)[:, -1]


# model -> (weights key, compiled step); weak, so a dropped model frees its compiled code
_compiled_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(model: GPT) -> tuple:
    """What the frozen weights of a compiled step depend on, read without touching their values:
    each parameter's identity, storage, dtype and version counter. torch bumps a tensor's
    `_version` at every in-place write (an optimizer step, `load_state_dict`, `p.mul_()` under
    no_grad or inference_mode); a parameter replaced or moved (`model.to(...)`) has new storage.
    Writes through `p.data` (a tensor with a version counter of its own) are not seen."""
    return tuple((id(p), p.data_ptr(), p.dtype, p._version) for p in model.parameters())


def compiled_decode_step(model: GPT) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`decode_step` for this model through torch.compile, built once and kept for the model.

    On CPU: inductor with the weights frozen into the graph (prepacked for oneDNN, which runs bf16
    on AMX where the CPU has it), max-autotune GEMMs and the C++ wrapper. On CUDA: max-autotune
    with CUDA graphs. Compiling takes seconds to a minute, and again for each new batch size or
    cache length. Frozen weights are constants of the compiled code, so the step is rebuilt
    whenever a parameter was replaced or written in place since it was compiled (`_weights_key`,
    a few integers per parameter: checking it costs nothing beside a step).
    """
    key = _weights_key(model)
    cached = _compiled_steps.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]

    def step(token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return decode_step(model, token, input_pos)

    if model.device.type == "cuda":
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

    _compiled_steps[model] = (key, compiled)
    return compiled


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    **options: Any,
) -> torch.Tensor:
    """Continue the prompt idx (B, T); return it with the new tokens, (B, T + n_new), int64.

    n_new is max_new_tokens, or fewer when every row has emitted a stop token. `sampling` and the
    keyword `options` are those of `generate_stream`.
    """
    steps = list(generate_stream(model, idx, max_new_tokens, sampling, **options))
    prompt = idx.to(device=model.device, dtype=torch.long)
    if not steps:
        return prompt.clone()
    return torch.cat([prompt, torch.stack(steps, dim=1)], dim=1)


@dataclasses.dataclass(frozen=True)
class _Decoding:
    """The checked settings of one generation (what `generate_stream` hands to its loop)."""

    sampling: SamplingConfig
    stops: torch.Tensor | None
    generator: torch.Generator | None
    use_cache: bool
    logits_mask: LogitsMask | None
    max_context: int
    window_shift: int
    compile: bool
    history: torch.Tensor | None


def generate_stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    *,
    stop_tokens: int | Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    logits_mask: LogitsMask | None = None,
    max_context: int | None = None,
    window_shift: int | None = None,
    compile: bool = False,
    history: torch.Tensor | None = None,
    **sampling_fields: Any,
) -> Iterator[torch.Tensor]:
    """Yield the new tokens one step at a time, each a (B,) int64 tensor.

    idx: (B, T) prompt of token ids; a 1-D prompt is an error (use `idx[None]` for one row).
    sampling: a `SamplingConfig` (mask -> temperature -> top-k -> top-p -> sample; temperature 0
    is greedy); `sampling_fields` override its fields by name (`temperature=0.9, top_p=0.95`, and
    `greedy=True` for temperature 0). `generator` seeds the draws: the same seed gives the same tokens.
    stop_tokens: a row that emits one is finished; it keeps emitting that same token while the
    other rows go on, and the iteration ends once every row has finished.
    use_cache: True decodes through the static KV cache (set up for this batch and length, and left
    in place for the next call; `model.clear_cache()` frees it); False runs the whole window every
    step (the slow reference).
    logits_mask: a grammar (`musicgpt.tokenizers.base.LogitsMask`): `start(prompt)` once, then
    `allowed()` before and `advance(tokens)` after every step. If it has `group_of_id`, each group
    keeps its probability mass under the mask (`SamplingConfig.mask_mode`).
    max_context: the most tokens the model sees (default block_size; a relative model may see more
    than it was trained on). The prompt must fit in it.
    window_shift: learned positions only: how far the window slides when the context is full
    (default max_context // 4).
    compile: run the decode steps through `compiled_decode_step` (with use_cache only). Worth it for
    long continuations: compiling costs seconds; bf16 weights (`model.to(torch.bfloat16)`) gain most.
    history: (B, H) tokens that came before idx (the part of a long prompt the model's window no
    longer holds): the prompt cache (`SamplingConfig.prompt_cache`) reads them with the prompt
    and what is sampled, so the model can copy from further back than it sees.

    The model runs in eval mode under torch.inference_mode; its train/eval mode is restored at the
    end. Bad arguments raise at the call, before any iteration.
    """
    sampling = SamplingConfig.build(sampling, **sampling_fields)
    config = model.config
    if max_context is None:
        max_context = config.block_size
    if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
        raise ModelInputError(f"max_context must be a positive integer, got {max_context!r}")
    if not config.relative and max_context > config.block_size:
        raise ModelInputError(
            f"max_context {max_context} is longer than this model's learned positions (block_size="
            f"{config.block_size}); only relative-attention models read past their training window"
        )
    model.check_input(idx)
    if idx.shape[1] > max_context:
        raise ModelInputError(
            f"the prompt has {idx.shape[1]} tokens, more than the context of {max_context}: keep its last ones"
        )
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ModelInputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if window_shift is None:
        window_shift = max(1, max_context // 4)
    if not config.relative and not 1 <= window_shift < max_context:
        raise ModelInputError(
            f"window_shift must be in 1..{max_context - 1} (max_context - 1), got {window_shift!r}"
        )
    if history is not None and (history.ndim != 2 or history.shape[0] != idx.shape[0]):
        raise ModelInputError(
            f"history must be (batch={idx.shape[0]}, H) token ids, got shape {tuple(history.shape)}"
        )
    device = model.device
    run = _Decoding(
        sampling=sampling,
        stops=_stop_tensor(stop_tokens, config.vocab_size, device),
        generator=generator,
        use_cache=use_cache,
        logits_mask=logits_mask,
        max_context=max_context,
        window_shift=window_shift,
        compile=compile,
        history=history,
    )
    return _stream(model, idx.to(device=device, dtype=torch.long), max_new_tokens, run)


Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (token (B,), input_pos (1,)) -> logits (B, V)


class RingCache:
    """Relative attention: a ring buffer of `context` slots, never re-prefilled."""

    def __init__(self, model: GPT, step: Step, context: int, total: int):
        self.model, self._step = model, step
        self.cache_len = min(context, total)
        # token positions, which go on growing (the cache maps them to slots); sliced into views,
        # so a step allocates no tensor of its own
        self.positions = torch.arange(total, device=model.device)

    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        self.model.setup_cache(idx.shape[0], self.cache_len)
        return prefill(self.model, idx, self.positions[: idx.shape[1]])

    def step(self, token: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        n = history.shape[1]  # the token is the n-th
        return self._step(token, self.positions[n - 1 : n])


class SlidingCache:
    """Learned positions: a window at positions 0..context-1 that, once full, is cut to its last
    `keep` tokens, re-prefilled at 0.."""

    def __init__(self, model: GPT, step: Step, context: int, total: int, keep: int):
        self.model, self._step, self.keep = model, step, keep
        self.cache_len = min(context, total)  # full only when cache_len == context: then it slides
        self.positions = torch.arange(self.cache_len, device=model.device)
        self.n_cached = 0  # the window's length

    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        self.model.setup_cache(idx.shape[0], self.cache_len)
        self.n_cached = idx.shape[1]
        return prefill(self.model, idx, self.positions[: self.n_cached])

    def step(self, token: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.n_cached == self.cache_len:
            logits = prefill(self.model, history[:, -self.keep :], self.positions[: self.keep])
            self.n_cached = self.keep
            return logits
        logits = self._step(token, self.positions[self.n_cached : self.n_cached + 1])
        self.n_cached += 1
        return logits


class Uncached:
    """The reference: every step runs the model over the window from scratch (no KV cache)."""

    def __init__(self, model: GPT, context: int, keep: int):
        self.model, self.context, self.keep = model, context, keep
        self.ring = model.config.relative
        self.start = 0  # learned positions: the window is history[:, start:]

    def prefill(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx, validate=False, last_only=True)[:, -1]

    def step(self, token: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.ring:  # every token so far, each attending to the last `context` (the ring's view)
            return self.model(history, validate=False, last_only=True, window=self.context)[:, -1]
        n = history.shape[1]
        if n - self.start > self.context:
            self.start = n - self.keep
        return self.model(history[:, self.start :], validate=False, last_only=True)[:, -1]


def _decoder(model: GPT, run: _Decoding, total: int) -> RingCache | SlidingCache | Uncached:
    """The decoding mode of this generation, `total` tokens long (prompt and new ones)."""
    keep = run.max_context - run.window_shift  # learned positions: the window's length after a slide
    if not run.use_cache:
        return Uncached(model, run.max_context, keep)
    step = compiled_decode_step(model) if run.compile else functools.partial(decode_step, model)
    if model.config.relative:
        return RingCache(model, step, run.max_context, total)
    return SlidingCache(model, step, run.max_context, total, keep)


@torch.inference_mode()  # applied around each resumption, so the caller's code is not in inference mode
def _stream(model: GPT, idx: torch.Tensor, max_new_tokens: int, run: _Decoding) -> Iterator[torch.Tensor]:
    if max_new_tokens == 0:
        return
    was_training = model.training
    model.eval()
    try:
        B, T = idx.shape
        tokens = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=idx.device)  # the whole history
        tokens[:, :T] = idx
        decoder = _decoder(model, run, T + max_new_tokens)
        logits = decoder.prefill(idx)
        mask = run.logits_mask
        group_of_id = None
        if mask is not None:
            mask.start(idx.cpu().numpy())
            groups = getattr(mask, "group_of_id", None)
            group_of_id = None if groups is None else torch.as_tensor(np.asarray(groups), dtype=torch.long)
            if group_of_id is not None:  # a model older than ids its grammar knows (see allowed_mask)
                group_of_id = group_of_id[: logits.shape[-1]]
        cache = None
        if run.sampling.prompt_cache > 0:
            heard = idx if run.history is None else torch.cat([run.history.to(idx.device), idx], dim=1)
            cache = make_prompt_cache(mask, heard.cpu().numpy(), run.sampling.prompt_cache, logits.shape[-1])
        finished = stop_emitted = None
        if run.stops is not None:
            finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
            stop_emitted = torch.zeros(B, dtype=torch.long, device=idx.device)

        for i in range(max_new_tokens):
            logits = sampler_logits(logits, mask, cache)
            allowed = allowed_mask(mask, logits) if mask is not None else None
            spread = None
            if allowed is not None and run.sampling.mask_mode == "spread" and hasattr(mask, "spread"):
                spread = torch.from_numpy(np.asarray(mask.spread(), dtype=np.float32)[:, : logits.shape[-1]])
            tok = next_token(logits, run.sampling, allowed, group_of_id, run.generator, spread)
            if run.stops is not None:
                tok = torch.where(finished, stop_emitted, tok)  # finished rows repeat their stop token
                stop_emitted = tok
                finished = finished | torch.isin(tok, run.stops)
            tokens[:, T + i] = tok
            if mask is not None or cache is not None:
                tok_np = tok.cpu().numpy()
                if mask is not None:
                    mask.advance(tok_np)
                if cache is not None:
                    cache.append(tok_np)
            yield tok
            if i == max_new_tokens - 1 or (finished is not None and bool(finished.all())):
                return
            # the token apart from the history (its last column), so that a compiled step always
            # sees a contiguous (B,) tensor
            logits = decoder.step(tok, tokens[:, : T + i + 1])
    finally:
        model.train(was_training)


def make_prompt_cache(mask: LogitsMask | None, heard: np.ndarray, strength: float, vocab_size: int):
    """The prompt cache over `heard` (B, T): the grammar's own where it knows better units than
    tokens (`copy_cache`; piano: the note cache), else the token cache, matching the grammar's
    keys where it has them (`match_key_of_id`)."""
    make_cache = getattr(mask, "copy_cache", None)
    if make_cache is not None:
        return make_cache(heard, strength)
    return PromptCache(heard, vocab_size, strength=strength, key_of_id=getattr(mask, "match_key_of_id", None))


def sampler_logits(logits: torch.Tensor, mask: LogitsMask | None, cache) -> torch.Tensor:
    """What the sampler draws from, before the grammar's mask and the SamplingConfig: the model's
    (B, V) logits with the grammar's prior added (`logit_bias`, e.g. piano's release prior), the
    prompt cache mixed in, and the mass of tokens the grammar caps moved onto the cap
    (`fold_logits`, e.g. an infilled middle's shifts past its end). The one place all three
    happen: generation here, and the teacher-forced scoring of the same distribution
    (evaluate/copy_gap.py)."""
    logit_bias = getattr(mask, "logit_bias", None)
    if logit_bias is not None:
        bias = torch.from_numpy(np.asarray(logit_bias(), dtype=np.float32)).to(logits.device)
        logits = logits.float().clone()
        width = min(bias.shape[1], logits.shape[-1])  # ids past either's vocabulary: no prior
        logits[:, :width] += bias[:, :width]
    if cache is not None:
        logits = cache.mix(logits)
    fold_logits = getattr(mask, "fold_logits", None)  # mass of capped tokens moved onto the cap
    if fold_logits is not None:
        logits = fold_logits(logits)
    return logits


def allowed_mask(logits_mask: LogitsMask, logits: torch.Tensor) -> torch.Tensor:
    """The grammar's allowed ids as a (B, V) bool tensor shaped like `logits`."""
    allowed = np.asarray(logits_mask.allowed())
    # A vocabulary grows at its end (the performance FIM tokens came after EOS and PAD): a model
    # trained before reads fewer ids than its grammar knows, and those it lacks must be forbidden.
    if allowed.ndim == 2 and allowed.shape[1] > logits.shape[1] and not allowed[:, logits.shape[1] :].any():
        allowed = allowed[:, : logits.shape[1]]
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
