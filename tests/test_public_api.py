"""The names the README, docs and notebooks use, the light import they rely on, and the README's
Python section run as written."""

import re
import subprocess
import sys

from conftest import ROOT

import musicgpt


def test_public_names_are_what_they_say():
    from musicgpt import GPT, GPTConfig, PerformanceTokenizer, generate, generate_stream, load_tokenizer

    assert callable(generate) and generate.__name__ == "generate"
    assert callable(generate_stream) and generate_stream.__name__ == "generate_stream"
    assert GPT.__name__ == "GPT" and GPTConfig.__name__ == "GPTConfig"
    assert PerformanceTokenizer().vocab_size == 393  # 390 events and specials, then the 3 FIM ids
    assert load_tokenizer("bytes").vocab_size == 257
    assert sorted(musicgpt.__all__) == sorted(
        [
            "GPT",
            "GPTConfig",
            "PerformanceTokenizer",
            "ByteTokenizer",
            "GPT2BPETokenizer",
            "generate",
            "generate_stream",
            "load_tokenizer",
            "MusicGPTError",
            "__version__",
        ]
    )


def test_importing_the_package_and_the_tokenizer_does_not_import_torch():
    code = "import sys, musicgpt; musicgpt.PerformanceTokenizer; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def readme_python() -> str:
    """The code block of the README's "Python" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_python_section_runs_as_written(tmp_path, monkeypatch):
    """The snippet, with a small random model where it names the trained one: every call in it works."""
    import pretty_midi
    import torch

    from musicgpt import GPT, GPTConfig

    code = readme_python()
    assert '"runs/piano/model"' in code  # the one thing swapped below: a trained model is not at hand
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    GPT(GPTConfig.preset("music-tiny")).save_pretrained(model_dir)
    code = code.replace('"runs/piano/model"', repr(str(model_dir)))
    for m in re.findall(r'"([^"]+\.mid)"', code):  # a MIDI file named relative to the repository
        if (ROOT / m).exists():
            code = code.replace(f'"{m}"', repr(str(ROOT / m)))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python)", "exec"), {})
    written = pretty_midi.PrettyMIDI(str(tmp_path / "continuation.mid"))
    assert len(written.instruments[0].notes) > 10  # the prompt's notes and what followed
