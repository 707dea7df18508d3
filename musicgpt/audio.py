"""Audio from MIDI: fluidsynth with a General MIDI soundfont (`musicgpt generate --wav`)."""

from __future__ import annotations

from pathlib import Path

from musicgpt.errors import MusicGPTError


def wav_tools() -> tuple[str, Path]:
    """(the fluidsynth program, a General MIDI soundfont); what is missing is a one-line error.

    Callers check before sampling, so that a missing program never throws the music away.
    """
    import shutil

    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        raise MusicGPTError("--wav needs the fluidsynth program (Debian: apt-get install fluidsynth)")
    soundfont = find_soundfont()
    if soundfont is None:
        raise MusicGPTError(
            "--wav needs a General MIDI soundfont (Debian: apt-get install timgm6mb-soundfont)"
        )
    return fluidsynth, soundfont


def render_wav(midi_path: Path, wav_path: Path) -> Path:
    """Render with fluidsynth and a General MIDI soundfont (Debian's timgm6mb, or pretty_midi's copy)."""
    import subprocess

    fluidsynth, soundfont = wav_tools()
    tmp = wav_path.with_name(f".{wav_path.name}.tmp.wav")
    cmd = [fluidsynth, "-ni", "-g", "0.8", "-r", "44100", "-F", str(tmp), str(soundfont), str(midi_path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise MusicGPTError(f"fluidsynth failed on {midi_path}: {result.stderr.strip()[-300:]}")
    tmp.replace(wav_path)
    return wav_path


def find_soundfont() -> Path | None:
    candidates = [
        Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
        Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
        Path("/usr/share/sounds/sf2/default-GM.sf2"),
    ]
    try:
        import pretty_midi

        candidates.append(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")
    except ImportError:
        pass
    return next((c for c in candidates if c.exists()), None)
