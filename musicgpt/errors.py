"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class MusicGPTError(Exception):
    """Base class: bad input, bad config, missing file. Never a bug in musicgpt itself."""


class MidiReadError(MusicGPTError):
    """A MIDI file that cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(MusicGPTError):
    """A config file or value that does not make sense."""


def check_known_keys(given, known, noun: str, where: str = "") -> None:
    """A ConfigError listing the keys of `given` that are not `known` ("{where}unknown {noun} [...];
    known: [...]"), so that a misspelt setting is refused rather than dropped without a word."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{where}unknown {noun} {unknown}; known: {sorted(known)}")
