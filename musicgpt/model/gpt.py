"""The GPT-2 model: one file, GPT-2's own parameter names, music and text alike.

    idx (B, T) ─▶ wte + wpe ─▶ n_layer x Block ─▶ ln_f ─▶ lm_head (tied to wte) ─▶ logits (B, T, V)
    Block: x + attn(ln_1(x)), then x + mlp(ln_2(x))        (pre-LayerNorm, as GPT-2)

Positions are one of three (`position_encoding`, see positions.py): GPT-2's learned table `wpe`
(`"learned"`, the default), Music Transformer's relative attention (`"relative"`: each layer
learns an embedding of every distance, added to the attention logits) or rotary positions
(`"rope"`: q and k rotated by their position, no parameters). With the last two attention sees
only distances, so the model runs on contexts longer than the `block_size` it trained on, and
the KV cache (kv_cache.py) can be a ring buffer that drops its oldest slot.

Names follow Hugging Face's GPT2LMHeadModel (transformer.wte, transformer.h.0.attn.c_attn, ...)
so checkpoints map one to one; HF stores its Conv1D weights transposed, `hf.py` handles that.
Attention runs through `F.scaled_dot_product_attention` (training on CPU in bf16 swaps in a faster
backward, and a faster GELU: `cpu_kernels.py`); the attention view's explicit softmax
(`explicit_attention`) takes the same q, k, v, bias and mask, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicgpt.errors import ConfigError, MusicGPTError
from musicgpt.model.config import POSITION_ENCODINGS, PRESETS, GPTConfig  # noqa: F401 (the API's names)
from musicgpt.model.cpu_kernels import causal_attention, gelu_tanh
from musicgpt.model.kv_cache import CacheRead, KVCache
from musicgpt.model.positions import (
    apply_rope,
    relative_logits_at,
    relative_logits_causal,
    rope_angles,
)


class ModelInputError(MusicGPTError, ValueError):
    """Ids, shapes or positions the model cannot take (out of the vocabulary, too long, ...)."""


class CacheError(MusicGPTError, RuntimeError):
    """The KV cache was used without `setup_cache`, or does not fit the input."""


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / sqrt(hs) + bias, under mask) v with the probabilities at hand, in float32.

    What the attention view shows: the same softmax SDPA computes, written out so that the
    probabilities (B, nh, T, L) can be returned. mask (T, L) bool, True where a query may look;
    None is causal over q's own T positions.
    """
    T = q.size(-2)
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, L)
    if bias is not None:
        att = att + bias.float()
    probs = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    y = F.dropout(probs, dropout_p, dropout_p > 0).to(v.dtype) @ v  # (B, nh, T, hs)
    return y, probs


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, with whichever position encoding the config names.

    One path for every use: q, k, v from x; rotary positions rotate q and k; the KV cache (if
    any) stores the new k, v and hands back what to attend over with its mask and distances;
    relative attention adds q·E[distance] to the logits; then attention, through SDPA (or the
    faster CPU training kernel) or, for the attention view, the explicit softmax.
    """

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.layer = layer  # this layer's index into the model's KV cache
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rel_emb = None
        if config.position_encoding == "relative":
            # One table per head, as in Music Transformer: heads specialise in distances (one
            # follows the beat, another the previous note), which a shared table cannot express.
            self.rel_emb = nn.Parameter(torch.empty(config.n_head, config.n_relative, config.head_dim))

    def relative_bias(self, q: torch.Tensor, distance: torch.Tensor | None) -> torch.Tensor | None:
        """Relative attention's logits term (B, nh, T, L), scaled like q·k; None for other encodings.

        distance (T, L): how far back each key lies from each query (the cache's); None: causal
        over q's own T positions, every distance skewed into place.
        """
        if self.rel_emb is None:
            return None
        scale = 1.0 / math.sqrt(q.size(-1))
        if distance is None:
            return relative_logits_causal(q, self.rel_emb) * scale
        return relative_logits_at(q, self.rel_emb, distance) * scale

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        read: CacheRead | None = None,
        need_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (y (B, T, C), probs (B, nh, T, L) float32 if need_probs else None).

        Without a cache: attention is causal over x, under `mask` (T, T) if given (a band, for
        sliding-window attention). With `cache` and its `read` (from `KVCache.book`): the new
        keys and values go into the cache, and the queries attend over what it holds.
        `rope`: (cos, sin) of the tokens' positions, for rotary models.
        """
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if rope is not None:  # rotated before caching: a cached key keeps its position's angle
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        distance = None
        if cache is not None:
            k, v, mask, distance = cache.update(self.layer, read, k, v)  # (B, nh, L, hs), (T, L)
        dropout_p = self.dropout if self.training else 0.0
        probs = None
        if mask is None and cache is None and not need_probs:  # plain causal: training, prefill
            # SDPA; on CPU in bf16 training faster kernels that add the relative term blockwise
            y = causal_attention(q, k, v, self.rel_emb, dropout_p)
        else:
            bias = self.relative_bias(q, distance)
            if need_probs:
                y, probs = explicit_attention(q, k, v, bias, mask, dropout_p)
            else:
                if mask is not None:  # additive: the bias where a query may look, -inf elsewhere
                    zero = torch.zeros((), dtype=q.dtype, device=q.device)
                    mask = torch.where(mask, zero if bias is None else bias.to(q.dtype), float("-inf"))
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), probs


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2's "gelu_new" is the tanh approximation; the exact erf GELU would break parity.
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, **attention: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (x, attention probabilities or None); `attention`: see CausalSelfAttention."""
        a, probs = self.attn(self.ln_1(x), **attention)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, probs


class GPT(nn.Module):
    """A decoder-only transformer with GPT-2's architecture and parameter names."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                # only learned positions have a table (relative attention's is in each layer)
                wpe=nn.Embedding(config.block_size, config.n_embd)
                if config.position_encoding == "learned"
                else None,
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2 scales the projections into the residual stream by 1/sqrt(2 * n_layer): each block
        # adds two of them, and the sum should not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            elif name.endswith("rel_emb"):
                nn.init.normal_(p, mean=0.0, std=0.02)
        self.kv_cache: KVCache | None = None  # set by setup_cache

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def device(self) -> torch.device:
        """Where the weights are (what the sampler moves prompts to)."""
        return self.transformer.wte.weight.device

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, the tied head counted once; `non_embedding` leaves out wte and wpe."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if self.transformer.wpe is not None:
                n -= self.transformer.wpe.weight.numel()
        return n

    # --- the KV cache -------------------------------------------------------------------------

    def setup_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate a static KV cache for `batch_size` rows and `max_seq_len` slots.

        Learned positions: the token at position p goes to slot p, so positions run 0 ..
        max_seq_len-1 <= block_size-1. Relative: any max_seq_len; the token at position p goes to
        slot p % max_seq_len, a ring buffer, so the cache holds the last max_seq_len tokens.
        device and dtype default to those of the weights. A cache of exactly this shape, device and
        dtype is kept as it is (stale entries are harmless: a prefill at position 0 forgets them);
        any other cache is replaced.
        """
        if max_seq_len < 1 or (not self.config.relative and max_seq_len > self.config.block_size):
            raise CacheError(
                f"max_seq_len must be in 1..block_size={self.config.block_size}, got {max_seq_len}"
            )
        if batch_size < 1:
            raise CacheError(f"batch_size must be >= 1, got {batch_size}")
        weight = self.transformer.wte.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        cache = self.kv_cache
        if (
            cache is not None
            and (cache.batch_size, cache.max_seq_len) == (batch_size, max_seq_len)
            and cache.k.dtype == dtype
            and cache.k.device == torch.device(device)
        ):
            return
        c = self.config
        self.kv_cache = KVCache(
            c.n_layer, batch_size, c.n_head, max_seq_len, c.head_dim, c.relative, device, dtype
        )

    def clear_cache(self) -> None:
        """Free the KV cache; a cached forward afterwards is an error until `setup_cache`."""
        self.kv_cache = None

    @property
    def cache_shape(self) -> tuple[int, int] | None:
        """(batch_size, max_seq_len) of the current cache, or None when there is none."""
        return None if self.kv_cache is None else (self.kv_cache.batch_size, self.kv_cache.max_seq_len)

    # --- forward --------------------------------------------------------------------------------

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        validate: bool = True,
        last_only: bool = False,
        window: int | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size), or (B, 1, vocab_size) with `last_only`.

        `last_only` is for sampling, which needs the last position's logits alone: the head over
        the whole vocabulary is then run once instead of T times (GPT-2's 50k vocabulary makes
        that the largest single product of a long prefill).

        Without `input_pos` the tokens sit at positions 0..T-1 and nothing is cached. With
        `input_pos` (T,), increasing, the tokens sit at those positions, their keys and values go
        into the KV cache (see `setup_cache`) and attention reads everything cached at earlier
        positions (a prefill writes 0..T-1 and forgets what the cache held, each decode step the
        next position; a relative model's ring buffer keeps the last `max_seq_len` of them).
        `validate=False` skips the checks on ids and positions (the sampler's hot loop, whose
        inputs were checked once); bad ids then give undefined results.
        `window` (uncached only): sliding-window attention, each token attending to the last
        `window` tokens (itself included) in every layer. That is what a relative model's ring
        buffer of `window` slots computes, so this is its uncached reference.
        """
        if validate:
            self.check_input(idx, input_pos)
        if window is not None and input_pos is not None:
            raise ModelInputError("window is for the uncached forward; the KV cache has its own length")
        return self._run(idx, input_pos, need_probs=False, last_only=last_only, window=window)[0]

    def forward_with_attention(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncached forward through the explicit-softmax path.

        Returns logits (B, T, V) and attention probabilities (n_layer, B, n_head, T, T), float32,
        causal (zero above the diagonal), each row summing to 1.
        """
        self.check_input(idx, None)
        logits, probs = self._run(idx, None, need_probs=True)
        return logits, torch.stack(probs)

    def attention_probs(self, idx: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (n_layer, B, n_head, T, T), float32; see `forward_with_attention`."""
        return self.forward_with_attention(idx)[1]

    def _run(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None,
        need_probs: bool,
        last_only: bool = False,
        window: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        B, T = idx.shape
        positions = torch.arange(T, device=idx.device) if input_pos is None else input_pos
        attention: dict[str, Any] = {"need_probs": need_probs}
        if input_pos is not None:  # book the positions into the cache, once for all layers
            attention.update(cache=self.kv_cache, read=self.kv_cache.book(input_pos, T > 1 or need_probs))
        elif window is not None and window < T:  # a band: each token sees the last `window`
            attention["mask"] = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril().triu(1 - window)
        c = self.config
        if c.position_encoding == "rope":
            attention["rope"] = rope_angles(positions, c.head_dim, c.rope_base, c.rope_scale)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.transformer.wpe is not None:
            x = x + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        all_probs = []
        for block in self.transformer.h:
            x, probs = block(x, **attention)
            if need_probs:
                all_probs.append(probs)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.transformer.ln_f(x)), all_probs

    def check_input(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None) -> None:
        """Raise ModelInputError / CacheError unless `forward(idx, input_pos)` can run."""
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ModelInputError(f"idx must be a (batch, T) tensor of token ids, got {shape}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ModelInputError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        B, T = idx.shape
        if B == 0 or T == 0:
            raise ModelInputError(f"idx is empty (shape {tuple(idx.shape)}); give at least one token")
        if T > self.config.block_size and not self.config.relative:
            raise ModelInputError(
                f"sequence of {T} tokens is longer than the model's context (block_size={self.config.block_size})"
            )
        lo, hi = torch.aminmax(idx)
        if lo < 0 or hi >= self.config.vocab_size:
            raise ModelInputError(
                f"token ids must be in 0..{self.config.vocab_size - 1}, got ids from {int(lo)} to {int(hi)}"
            )
        if input_pos is None:
            return
        if self.cache_shape is None:
            raise CacheError(
                "forward with input_pos needs a KV cache: call model.setup_cache(batch_size, max_seq_len)"
            )
        cache_batch, cache_len = self.cache_shape
        if B != cache_batch:
            raise CacheError(f"the KV cache was set up for batch size {cache_batch}, got a batch of {B}")
        if input_pos.dim() != 1 or input_pos.shape[0] != T:
            raise ModelInputError(
                f"input_pos must be a (T,)=({T},) tensor of positions, got {tuple(input_pos.shape)}"
            )
        lo, hi = torch.aminmax(input_pos)
        if lo < 0 or (hi >= cache_len and not self.config.relative):
            raise CacheError(f"positions {int(lo)}..{int(hi)} do not fit the KV cache of length {cache_len}")
        if T > 1 and not bool((input_pos[1:] > input_pos[:-1]).all()):
            raise ModelInputError(f"input_pos must increase, got {input_pos.tolist()}")
        if T > cache_len or (self.config.relative and T > 1 and hi >= cache_len):
            # several tokens at once into a full ring would overwrite keys their own queries need
            raise CacheError(
                f"{T} positions from {int(lo)} do not fit the KV cache of length {cache_len} in one pass"
            )

    # --- checkpoints ----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `config.yaml` and `model.safetensors` (the tied head stored once) into `directory`."""
        from safetensors.torch import save

        from musicgpt.io import atomic_write_bytes

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k != "lm_head.weight"}
        atomic_write_bytes(directory / "model.safetensors", save(state, metadata={"format": "pt"}))
        self.config.to_yaml(directory / "config.yaml")  # written last: its presence marks a whole checkpoint

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> GPT:
        """Load a checkpoint directory, in eval mode.

        Either this project's format (`config.yaml` + `model.safetensors`) or a Hugging Face GPT-2
        directory (`config.json` + `model.safetensors` or `pytorch_model.bin`). Nothing is unpickled:
        safetensors, or torch.load(weights_only=True).
        """
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path}: not a checkpoint directory")
        if (path / "config.yaml").exists():
            from musicgpt.io import read_safetensors

            config = GPTConfig.from_yaml(path / "config.yaml")
            weights = path / "model.safetensors"
            if not weights.exists():
                raise ConfigError(f"{path}: has config.yaml but no model.safetensors")
            state = read_safetensors(weights)
        elif (path / "config.json").exists():
            from musicgpt.model.hf import load_hf_checkpoint

            config, state = load_hf_checkpoint(path)
        else:
            raise ConfigError(f"{path}: no config.yaml (musicgpt) or config.json (Hugging Face GPT-2) in it")
        model = cls(config)
        model.load_weights(state, source=str(path))
        return model.to(device=device, dtype=dtype).eval()

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy GPT-2-named tensors into the model; any missing, unexpected or misshapen one is an error."""
        state = dict(state)
        state.pop("lm_head.weight", None)  # tied to wte: the embedding is the one copy we keep
        own = {k: v for k, v in self.state_dict().items() if k != "lm_head.weight"}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ConfigError(
                f"{source}: weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for k, v in state.items():
            if not isinstance(v, torch.Tensor):
                raise ConfigError(f"{source}: {k} is a {type(v).__name__}, not a tensor")
            if v.shape != own[k].shape:
                raise ConfigError(
                    f"{source}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}"
                )
        self.load_state_dict(state, strict=False)
