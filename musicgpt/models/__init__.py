"""Models that ship inside the package, found by name from any folder and any kind of install.

    musicgpt generate --prompt IN.mid --out OUT.mid                 # the default: piano-small
    musicgpt generate --checkpoint piano-small --prompt IN.mid ...   # the same, by name

Each is a model directory (config.yaml, model.safetensors, tokenizer.json, metrics.json,
MODEL_CARD.md) under `musicgpt/models/NAME/`, read through importlib.resources: a wheel carries it
as package data, and nothing looks for the source checkout.
"""

from __future__ import annotations

from contextlib import ExitStack
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "piano-small"
# `musicgpt infill`'s default. Both shipped models read the fill-in-the-middle tokens; piano-base's
# infilled spans come a little closer to the real ones (piano-small's MODEL_CARD.md, "Infilling"),
# and it is not the default for continuations: its continuations' rhythm follows the prompt less.
INFILL_MODEL = "piano-base"
_files = ExitStack()  # keeps extracted resources (from a zipped install) alive for the process


def bundled_models() -> list[str]:
    """Names of the models shipped in the package."""
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.joinpath("config.yaml").is_file())


def bundled_model_dir(name: str) -> Path | None:
    """The directory of the shipped model `name`, or None when no shipped model has that name."""
    if name not in bundled_models():
        return None
    return _files.enter_context(resources.as_file(resources.files(__name__).joinpath(name)))
