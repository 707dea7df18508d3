"""Files the package carries: the training configs, GPT-2's vocabulary, the bundled piano corpus.

They live inside the package (musicgpt/configs/, musicgpt/assets/) and are found with
importlib.resources, so a checkout, an editable install and a wheel installed anywhere read the
same files; nothing is looked up from the working directory or by walking up from a module.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from musicgpt.errors import ConfigError, MusicGPTError


def _package_path(*parts: str) -> Path:
    found = resources.files("musicgpt").joinpath(*parts)
    # A package imported from a zip archive has no real paths; the trainer, symusic and the
    # tokenizers library all need files on disk.
    if not isinstance(found, Path):
        raise MusicGPTError(f"musicgpt/{'/'.join(parts)}: the package is not installed as plain files")
    return found


def configs() -> dict[str, Path]:
    """Bundled training configs by name (the YAML files of musicgpt/configs: `piano_cpu`, ...)."""
    return {p.stem: p for p in sorted(_package_path("configs").glob("*.yaml"))}


def config_path(spec: str | Path) -> Path:
    """A config file: an existing path as given, else a bundled config by name (`piano_cpu`,
    `piano_cpu.yaml`, or the old checkout spelling `configs/piano_cpu.yaml`)."""
    path = Path(spec)
    if path.exists():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent in (Path("."), Path("configs")) and name in configs():
        return configs()[name]
    raise ConfigError(f"{spec}: no such config file (bundled configs: {', '.join(configs())})")


def piano_corpus() -> Path:
    """The folder of bundled piano MIDI files `musicgpt demo` trains on (see assets/README.md)."""
    return _package_path("assets", "piano")


def gpt2_vocabulary() -> tuple[Path, Path]:
    """GPT-2's BPE vocabulary: (encoder.json, vocab.bpe), OpenAI's names for vocab.json and merges.txt."""
    folder = _package_path("assets", "gpt2")
    return folder / "encoder.json", folder / "vocab.bpe"
