"""The fields of a generation request and their limits, checked on the server.

The page reads the same limits (`GET /api/info`) to set its inputs' bounds, but that is only a
courtesy: every value that reaches `parse_request` is checked here again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from musicgpt.errors import MusicGPTError

# An upload larger than this is refused (413) before it is parsed. MIDI is compact: a
# two-hour MAESTRO performance is under 1 MB.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class BadRequest(MusicGPTError):
    """A request the app refuses, with a message for the page; `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _num(x: float) -> str:
    """2147483647 as itself, 0.5 as 0.5, 5.0 as 5."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Field:
    name: str  # the form field, and the GenerationRequest attribute
    label: str  # how the page and the messages call it
    lo: float
    hi: float
    default: float | None  # None: optional, absent means "none" (the seed)
    integer: bool = False

    def parse(self, text: object) -> float | int | None:
        if text is not None and not isinstance(text, str):  # a file sent in a number's place
            raise BadRequest(f"{self.label} must be a number, not a file")
        if text is None or not text.strip():
            return self.default
        text = text.strip()
        try:
            value = float(text)
        except ValueError:
            raise BadRequest(f"{self.label} must be a number, got {text[:40]!r}") from None
        if not math.isfinite(value):
            raise BadRequest(f"{self.label} must be a finite number, got {text[:40]!r}")
        if self.integer:
            if value != int(value):
                raise BadRequest(f"{self.label} must be a whole number, got {text[:40]}")
            value = int(value)
        if not self.lo <= value <= self.hi:
            raise BadRequest(
                f"{self.label} must be between {_num(self.lo)} and {_num(self.hi)}, got {_num(value)}"
            )
        return value

    def to_json(self) -> dict:
        return {"label": self.label, "min": self.lo, "max": self.hi, "default": self.default,
                "integer": self.integer}  # fmt: skip


# Bounds keep one request to a few minutes of a CPU: 60 s of music is ~6,000 tokens a sample.
FIELDS = (
    Field("prompt_seconds", "prompt seconds", 0.0, 60.0, 10.0),  # 0: start from nothing
    Field("seconds", "continuation seconds", 1.0, 60.0, 10.0),
    Field("temperature", "temperature", 0.0, 2.0, 1.0),  # 0: greedy
    Field("top_p", "top-p", 0.01, 1.0, 0.95),
    # how strongly to copy what was heard (SamplingConfig.prompt_cache): 0 off, 1 the fitted weight
    Field("prompt_cache", "copy the prompt", 0.0, 2.0, 1.0),
    # a sequenced prompt's onset grid, subdivided N times (SamplingConfig.grid): 0 off, 1 the grid
    Field("grid", "snap to the prompt's grid", 0, 4, 1, integer=True),
    Field("num_samples", "samples", 1, 4, 2, integer=True),
    Field("seed", "seed", 0, 2**31 - 1, None, integer=True),
)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_seconds: float
    seconds: float
    temperature: float
    top_p: float
    prompt_cache: float
    grid: int
    num_samples: int
    seed: int | None


def parse_request(form: Mapping[str, str]) -> GenerationRequest:
    """The request's numbers from form fields (missing ones take their defaults); BadRequest names
    the first field that is not a number or is out of its bounds."""
    return GenerationRequest(**{f.name: f.parse(form.get(f.name)) for f in FIELDS})


def limits() -> dict:
    """The fields and their bounds, for the page."""
    return {f.name: f.to_json() for f in FIELDS}
