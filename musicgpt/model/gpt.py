"""The GPT-2 model: one file, GPT-2's own parameter names, music and text alike.

    idx (B, T) ─▶ wte + wpe ─▶ n_layer x Block ─▶ ln_f ─▶ lm_head (tied to wte) ─▶ logits (B, T, V)
    Block: x + attn(ln_1(x)), then x + mlp(ln_2(x))        (pre-LayerNorm, as GPT-2)

Names follow Hugging Face's GPT2LMHeadModel (transformer.wte, transformer.h.0.attn.c_attn, ...)
so checkpoints map one to one; HF stores its Conv1D weights transposed, `hf.py` handles that.
Attention runs through `F.scaled_dot_product_attention` (training on CPU in bf16 swaps in a faster
backward, and a faster GELU: `cpu_kernels.py`); the same code computes the explicit softmax (for
`attention_probs`) when asked, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from musicgpt.errors import ConfigError, MusicGPTError
from musicgpt.model.cpu_kernels import causal_attention, gelu_tanh
from musicgpt.model.kv_cache import KVCache


class ModelInputError(MusicGPTError, ValueError):
    """Ids, shapes or positions the model cannot take (out of the vocabulary, too long, ...)."""


class CacheError(MusicGPTError, RuntimeError):
    """The KV cache was used without `setup_cache`, or does not fit the input."""


# name -> GPTConfig keyword arguments. Music vocab: 388 performance events + EOS + PAD = 390.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),
    "music-tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=256, vocab_size=390),
    "music-small": dict(n_layer=4, n_head=4, n_embd=256, block_size=512, vocab_size=390, dropout=0.1),
    "music-20m": dict(n_layer=6, n_head=8, n_embd=512, block_size=2048, vocab_size=390),
}


@dataclass
class GPTConfig:
    """Hyperparameters of a GPT. Round-trips through YAML; `GPTConfig.preset(name)` for the named ones."""

    vocab_size: int
    block_size: int  # context length: the number of learned positions
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2 has them)
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not float(self.layer_norm_epsilon) > 0:
            raise ConfigError(f"GPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named config from `PRESETS`, with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GPTConfig:
        """Build from a dict; unknown or missing keys are a ConfigError naming `source`."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of GPTConfig fields, got {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"{source}: unknown GPTConfig field(s) {unknown}; known: {sorted(fields)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ConfigError(f"{source}: missing GPTConfig field(s) {missing}")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (atomically)."""
        import yaml

        from musicgpt.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> GPTConfig:
        from musicgpt.io import read_yaml_mapping

        return cls.from_dict(read_yaml_mapping(path, "model config"), source=str(path))

    @classmethod
    def load(cls, spec: str | Path) -> GPTConfig:
        """A preset name (`music-small`) or the path of a YAML file."""
        if str(spec) in PRESETS:
            return cls.preset(str(spec))
        path = Path(spec)
        if path.suffix in (".yaml", ".yml") or path.exists():
            return cls.from_yaml(path)
        raise ConfigError(f"{spec!r} is neither a model preset ({', '.join(PRESETS)}) nor a YAML file")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        kv_len: int | None = None,
        mask: torch.Tensor | None = None,
        need_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (y (B, T, C), probs (B, nh, T, T) float32 if need_probs else None).

        Without `input_pos` the attention is plainly causal over x. With it, k and v are written to
        the KV cache at those positions and the queries attend over the first `kv_len` cache slots
        (all of them if None) under `mask` (T, kv_len) bool, True where a query may look; a None
        mask lets every query see every one of those slots.
        """
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        causal = input_pos is None
        if not causal:
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, nh, cache_len, hs)
            k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        dropout_p = self.dropout if self.training else 0.0

        probs = None
        if need_probs:
            # The explicit path: the same softmax(QK^T / sqrt(hs) + mask) SDPA computes, in float32.
            att = (q.float() @ k.float().transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, L)
            if causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            probs = att.softmax(dim=-1)
            y = F.dropout(probs, dropout_p, self.training).to(v.dtype) @ v  # (B, nh, T, hs)
        elif causal:
            y = causal_attention(q, k, v, dropout_p)  # SDPA, or on CPU in bf16 a faster backward
        else:
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
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        kv_len: int | None = None,
        mask: torch.Tensor | None = None,
        need_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, probs = self.attn(self.ln_1(x), input_pos, kv_len, mask, need_probs)
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
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
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
        # (cache_len, cache_len) bool, set by setup_cache; a buffer so that .to(device) moves it
        self.register_buffer("causal_mask", None, persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, the tied head counted once; `non_embedding` leaves out wte and wpe."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    # --- the KV cache -------------------------------------------------------------------------

    def setup_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate a static KV cache for `batch_size` rows and positions 0 .. max_seq_len-1.

        device and dtype default to those of the weights. A cache of exactly this shape, device and
        dtype is kept as it is (stale entries are harmless: attention only reads the positions
        written since the last prefill at 0); any other cache is replaced.
        """
        if not 1 <= max_seq_len <= self.config.block_size:
            raise CacheError(
                f"max_seq_len must be in 1..block_size={self.config.block_size}, got {max_seq_len}"
            )
        if batch_size < 1:
            raise CacheError(f"batch_size must be >= 1, got {batch_size}")
        weight = self.transformer.wte.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        cache = self.transformer.h[0].attn.kv_cache
        if (
            cache is not None
            and (cache.batch_size, cache.max_seq_len) == (batch_size, max_seq_len)
            and cache.k.dtype == dtype
            and cache.k.device == torch.device(device)
        ):
            return
        c = self.config
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(batch_size, c.n_head, max_seq_len, c.head_dim, device, dtype)
        self.causal_mask = torch.ones(max_seq_len, max_seq_len, dtype=torch.bool, device=device).tril()

    def clear_cache(self) -> None:
        """Free the KV cache; a cached forward afterwards is an error until `setup_cache`."""
        for block in self.transformer.h:
            block.attn.kv_cache = None
        self.causal_mask = None

    @property
    def cache_shape(self) -> tuple[int, int] | None:
        """(batch_size, max_seq_len) of the current cache, or None when there is none."""
        cache = self.transformer.h[0].attn.kv_cache
        return None if cache is None else (cache.batch_size, cache.max_seq_len)

    # --- forward --------------------------------------------------------------------------------

    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, validate: bool = True
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size), always for every position.

        Without `input_pos` the tokens sit at positions 0..T-1 and nothing is cached. With
        `input_pos` (T,), increasing, the tokens sit at those positions, their keys and values go
        into the KV cache (see `setup_cache`) and attention reads everything cached at earlier
        positions (a prefill writes 0..T-1, each decode step the next one).
        `validate=False` skips the checks on ids and positions (the sampler's hot loop, whose
        inputs were checked once); bad ids then give undefined results.
        """
        if validate:
            self.check_input(idx, input_pos)
        return self._run(idx, input_pos, need_probs=False)[0]

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
        self, idx: torch.Tensor, input_pos: torch.Tensor | None, need_probs: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        B, T = idx.shape
        kv_len = mask = None  # uncached: plain causal attention over idx itself
        if input_pos is None:
            pos = torch.arange(T, device=idx.device)
        elif torch.compiler.is_compiling():
            # Compiled: attend over the whole cache so every decode step has the same shapes;
            # the slots after a query's position (empty or stale) are masked out.
            pos, mask = input_pos, self.causal_mask[input_pos]  # (T, cache_len)
        else:
            # Eager: read only the slots written so far (input_pos increases, so its last entry is
            # the furthest); the rest of the cache is masked anyway and reading it costs time.
            pos, kv_len = input_pos, int(input_pos[-1]) + 1
            if T > 1:  # one query at the newest position sees every slot up to it: no mask needed
                mask = self.causal_mask[input_pos, :kv_len]  # (T, kv_len)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        all_probs = []
        for block in self.transformer.h:
            x, probs = block(x, input_pos, kv_len, mask, need_probs)
            if need_probs:
                all_probs.append(probs)
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
        if T > self.config.block_size:
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
        if lo < 0 or hi >= cache_len:
            raise CacheError(f"positions {int(lo)}..{int(hi)} do not fit the KV cache of length {cache_len}")
        if T > 1 and not bool((input_pos[1:] > input_pos[:-1]).all()):
            raise ModelInputError(f"input_pos must increase, got {input_pos.tolist()}")

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
            from safetensors.torch import load_file

            config = GPTConfig.from_yaml(path / "config.yaml")
            weights = path / "model.safetensors"
            if not weights.exists():
                raise ConfigError(f"{path}: has config.yaml but no model.safetensors")
            state = load_file(weights)
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
