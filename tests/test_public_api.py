"""The names the README, docs and notebooks use, and the light import they rely on."""

import subprocess
import sys

import musicgpt


def test_public_names_are_what_they_say():
    from musicgpt import GPT, GPTConfig, PerformanceTokenizer, generate, generate_stream, load_tokenizer

    assert callable(generate) and generate.__name__ == "generate"
    assert callable(generate_stream) and generate_stream.__name__ == "generate_stream"
    assert GPT.__name__ == "GPT" and GPTConfig.__name__ == "GPTConfig"
    assert PerformanceTokenizer().vocab_size == 390
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
