"""The model's hyperparameters: `GPTConfig`, the named presets, and their YAML round trip.

Kept apart from gpt.py so that what only reads or writes configs (hf.py, the CLI's `params`)
does not need the model, and nothing imports gpt.py back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicgpt.errors import ConfigError, check_known_keys

POSITION_ENCODINGS = ("learned", "relative", "rope")

# name -> GPTConfig keyword arguments. Music vocab: 388 performance events + EOS + PAD = 390.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),
    "music-tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=256, vocab_size=390),
    "music-small": dict(n_layer=4, n_head=4, n_embd=256, block_size=512, vocab_size=390, dropout=0.1),
    "music-20m": dict(n_layer=6, n_head=8, n_embd=512, block_size=2048, vocab_size=390),
    # Music Transformer's relative attention at the 20M size (trains on shorter windows than it reads)
    "music-20m-relative": dict(
        n_layer=6, n_head=8, n_embd=512, block_size=512, vocab_size=390, position_encoding="relative"
    ),
}


@dataclass
class GPTConfig:
    """Hyperparameters of a GPT. Round-trips through YAML; `GPTConfig.preset(name)` for the named ones."""

    vocab_size: int
    # learned: the context length, the number of learned positions; relative: the training window
    # (forward and generation take longer contexts)
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2 has them)
    layer_norm_epsilon: float = 1e-5
    # "learned" (GPT-2's wpe), "relative" (Music Transformer) or "rope" (rotary, RoFormer)
    position_encoding: str = "learned"
    # relative only: distances 0 .. max_relative_distance-1 are learned, farther ones share the
    # last; None means block_size
    max_relative_distance: int | None = None
    # rope only: the angle of channel pair c at position p is p / rope_scale * rope_base^(-2c/head_dim).
    # rope_scale > 1 squeezes positions (linear interpolation) for contexts longer than trained.
    rope_base: float = 10000.0
    rope_scale: float = 1.0

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
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ConfigError(
                f"GPTConfig.position_encoding must be one of {POSITION_ENCODINGS}, got {self.position_encoding!r}"
            )
        distance = self.max_relative_distance
        if distance is not None:
            if isinstance(distance, bool) or not isinstance(distance, int) or distance < 1:
                raise ConfigError(
                    f"GPTConfig.max_relative_distance must be a positive integer, got {distance!r}"
                )
            if self.position_encoding != "relative":
                raise ConfigError("GPTConfig.max_relative_distance is for position_encoding='relative' only")
        for name in ("rope_base", "rope_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive number, got {value!r}")
        if (self.rope_base, self.rope_scale) != (10000.0, 1.0) and self.position_encoding != "rope":
            raise ConfigError("GPTConfig.rope_base and rope_scale are for position_encoding='rope' only")

    @property
    def relative(self) -> bool:
        """Whether attention sees only distances between tokens (relative attention or rotary
        positions): no absolute position, so contexts longer than block_size, and a ring-buffer cache."""
        return self.position_encoding in ("relative", "rope")

    @property
    def n_relative(self) -> int:
        """How many distances a relative model learns (0 .. n_relative-1)."""
        return self.max_relative_distance or self.block_size

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
        check_known_keys(d, [f.name for f in dataclasses.fields(cls)], "GPTConfig field(s)", f"{source}: ")
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
