"""Every subcommand, fed what a careless user or a hostile tester would type: one line, exit 2.

The table drives each subcommand's arguments with bad values (negative, zero, nan, inf, huge,
wrong type, unwritable or unreadable paths); the tests after it are the rows of the hardening
issue that a user meets through `generate`, `evaluate`, `attention`, `params` and `demo`, each with
its exact message. Data building and training have theirs in tests/data and tests/training.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import CONFIGS, PIANO_DIR, TEXT_DIR

from musicgpt.cli import main
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer

FUR_ELISE = PIANO_DIR / "fur-elise.mid"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `musicgpt ARGV`; stderr must never hold a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


# What Lightning logs on its own while `train` sets up (before our error, if there is one).
LIGHTNING_INFO = (
    "INFO: ",
    "Seed set to ",
    "GPU available: ",
    "TPU available: ",
    "Using bfloat16 ",
    "💡 Tip: ",
)


def one_line_error(argv: list[str], capsys) -> str:
    """The one line `musicgpt ARGV` prints on stderr when it refuses (exit status 2)."""
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = err.splitlines()
    assert err.endswith("\n") and all(line.startswith(LIGHTNING_INFO) for line in lines[:-1]), err
    assert lines[-1].startswith(
        ("musicgpt: error: ", f"musicgpt {argv[0]}: error: ", "musicgpt data build: error: ")
    )
    return lines[-1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model")
    GPT(GPTConfig.preset("music-tiny")).save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="module")
def music_data(tmp_path_factory):
    from musicgpt.data.build import build_dataset

    src = tmp_path_factory.mktemp("src")
    for name in ("fur-elise.mid", "solace.mid", "bethena.mid"):
        shutil.copy(PIANO_DIR / name, src / name)
    out = tmp_path_factory.mktemp("music_data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


# ------------------------------------------------------------------------------------ the table

POSITIVE_INT = ["-1", "0", "1.5", "nan", "inf", "abc", "99999999999999999999999"]
SECONDS = ["-1", "0", "nan", "inf", "-inf", "1e400", "100000", "abc"]
NON_NEGATIVE = ["-1", "nan", "inf", "abc"]
PROBABILITY = ["0", "-0.5", "1.5", "nan", "inf", "abc"]
FRACTION = ["-0.1", "1", "nan", "inf", "abc"]
SEED = ["-1", "1.5", "nan", "abc", "99999999999999999999999"]
DEVICE = ["banana", "cuda:99", "", "-1"]


def _paths(tmp_path):
    """Bad output paths: a folder, a folder spelled with a slash, a file as parent, no write access."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "a-fifo")
    outputs = [
        tmp_path / "a-folder",
        f"{tmp_path}/new/",
        tmp_path / "a-file" / "x.out",
        "/proc/musicgpt/x.out",
    ]
    inputs = [tmp_path / "missing", tmp_path / "a-fifo"]
    return [str(p) for p in outputs], [str(p) for p in inputs]


def _table(tmp_path, model_dir, music_data):
    """(subcommand argv with {} where the bad value goes, bad values) rows."""
    outputs, inputs = _paths(tmp_path)
    out, mid, npy = str(tmp_path / "o.mid"), str(FUR_ELISE), str(tmp_path / "ids.npy")
    np.save(npy, PerformanceTokenizer().encode(FUR_ELISE))
    gen = ["generate", "--checkpoint", str(model_dir), "--prompt", mid, "--seconds", "1", "--out", out]
    att = [
        "attention",
        "--random-init",
        "music-tiny",
        "--midi",
        mid,
        "--seconds",
        "2",
        "--out",
        str(tmp_path / "p.html"),
    ]
    ev = ["evaluate", "--checkpoint", str(model_dir), "--data", str(music_data)]
    build = ["data", "build", str(PIANO_DIR), "--out", str(tmp_path / "d")]
    demo = ["demo", "--run-dir", str(tmp_path / "demo")]
    rows = [
        (["tokenize", "{}"], inputs + [str(tmp_path)]),
        (["tokenize", mid, "--out", "{}"], outputs),
        (["tokenize", mid, "--width", "{}"], POSITIVE_INT),
        (["tokenize", mid, "--programs", "{}"], ["-1", "128", "abc", "nan"]),
        (["detokenize", "{}", out], inputs),
        (["detokenize", npy, "{}"], outputs),
        (["data", "build", "{}", "--out", str(tmp_path / "d")], inputs),
        (["data", "build", str(PIANO_DIR), "--out", "{}"], [str(tmp_path / "a-file"), *outputs[2:]]),
        ([*build, "--workers", "{}"], [*POSITIVE_INT, "5000"]),
        ([*build, "--val-fraction", "{}"], FRACTION),
        ([*build, "--test-fraction", "{}"], FRACTION),
        ([*build, "--tokenizer", "{}"], ["banana", mid, str(tmp_path)]),
        ([*build, "--config", "{}"], [mid, str(tmp_path), str(tmp_path / "missing.yaml")]),
        (["evaluate", "--checkpoint", "{}", "--data", str(music_data)], inputs),
        (["evaluate", "--checkpoint", str(model_dir), "--data", "{}"], inputs),
        ([*ev, "--max-windows", "{}"], POSITIVE_INT),
        ([*ev, "--batch-size", "{}"], POSITIVE_INT),
        ([*ev, "--split", "{}"], ["banana", ""]),
        ([*ev, "--device", "{}"], DEVICE),
        ([*ev, "--continuations", "--prompt-seconds", "{}"], SECONDS),
        ([*ev, "--continuations", "--seconds", "{}"], SECONDS),
        ([*ev, "--continuations", "--num-samples", "{}"], [*POSITIVE_INT, "257"]),
        ([*ev, "--continuations", "--max-pieces", "{}"], POSITIVE_INT),
        ([*ev, "--continuations", "--seed", "{}"], SEED),
        ([*ev, "--continuations", "--report", "{}"], outputs),
        ([*ev, "--continuations", "--bigram-data", "{}"], inputs),
        ([*ev, "--continuations", "--temperature", "{}"], NON_NEGATIVE),
        ([*ev, "--continuations", "--top-k", "{}"], POSITIVE_INT),
        ([*ev, "--continuations", "--top-p", "{}"], PROBABILITY),
        (["generate", "--checkpoint", "{}", "--out", out], inputs),
        ([*gen, "--prompt", "{}"], inputs),
        ([*gen, "--prompt-seconds", "{}"], SECONDS),
        ([*gen, "--seconds", "{}"], SECONDS),
        ([*gen, "--out", "{}"], outputs),
        ([*gen, "--png", "{}"], outputs),
        ([*gen, "--temperature", "{}"], NON_NEGATIVE),
        ([*gen, "--top-k", "{}"], POSITIVE_INT),
        ([*gen, "--top-p", "{}"], PROBABILITY),
        ([*gen, "--seed", "{}"], SEED),
        ([*gen, "--num-samples", "{}"], [*POSITIVE_INT, "257"]),
        ([*gen, "--max-new-tokens", "{}"], POSITIVE_INT),
        ([*gen, "--device", "{}"], DEVICE),
        (["attention", "--random-init", "music-tiny", "--midi", "{}", "--out", out], inputs),
        ([*att, "--out", "{}"], outputs),
        ([*att, "--png", "{}"], outputs),
        ([*att, "--start", "{}"], ["-5", "nan", "inf", "abc"]),
        ([*att, "--seconds", "{}"], SECONDS),
        ([*att, "--layer", "{}"], ["-1", "2", "nan", "abc", "99999999999999999999999"]),
        ([*att, "--head", "{}"], ["-1", "2", "nan", "abc"]),
        ([*att, "--note", "{}"], ["-1", "nan", "abc", "99999999"]),
        ([*att, "--arcs-per-head", "{}"], POSITIVE_INT),
        ([*att, "--top-k", "{}"], POSITIVE_INT),
        ([*att, "--seed", "{}"], SEED),
        ([*att, "--device", "{}"], DEVICE),
        (["attention", "--random-init", "{}", "--midi", mid, "--out", out], ["banana", mid, str(tmp_path)]),
        (["params", "{}"], ["banana", mid, str(tmp_path), str(tmp_path / "missing.yaml")]),
        ([*demo, "--minutes", "{}"], [*SECONDS[:-2], "99999999", "abc"]),
        ([*demo, "--max-steps", "{}"], POSITIVE_INT),
        ([*demo, "--seconds", "{}"], SECONDS),
        ([*demo, "--seed", "{}"], SEED),
        (["demo", "--run-dir", "{}"], [str(tmp_path / "a-file"), *outputs[2:]]),
        ([*demo, "--src", "{}"], inputs),
        ([*demo, "--config", "{}"], [mid, str(tmp_path), str(tmp_path / "missing.yaml")]),
        (["serve", "--checkpoint", "{}"], inputs),
        (["serve", "--checkpoint", str(model_dir), "--port", "{}"], ["-1", "65536", "abc", "nan"]),
        (["serve", "--checkpoint", str(model_dir), "--pieces", "{}"], [*inputs, mid]),
        (["serve", "--checkpoint", str(model_dir), "--device", "{}"], DEVICE),
    ]
    train = [
        "train",
        "--config",
        "piano_cpu",
        "--run_dir",
        str(tmp_path / "run"),
        "--data.data_dir",
        str(music_data),
    ]
    rows += [
        ([*train, "--data.batch_size", "{}"], ["0", "-2", "abc", "nan", "1.5"]),
        ([*train, "--data.num_workers", "{}"], ["-1", "abc"]),
        ([*train, "--model.config.n_layer", "{}"], ["0", "-1", "abc"]),
        ([*train, "--model.config.dropout", "{}"], ["-0.5", "1", "nan"]),
        ([*train, "--trainer.max_steps", "{}"], ["-5", "abc"]),
        ([*train, "--seed_everything", "{}"], ["-1", "99999999999999999999999"]),
        (["train", "--config", "{}"], [mid, str(tmp_path), str(tmp_path / "missing.yaml")]),
        (["train", "--config", "piano_cpu", "--run_dir", "{}"], [str(tmp_path / "a-file"), *outputs[2:]]),
        (
            ["train", "--config", "piano_cpu", "--run_dir", str(tmp_path / "run"), "--data.data_dir", "{}"],
            inputs,
        ),
    ]
    return rows


def test_every_subcommand_refuses_bad_values_in_one_line(tmp_path, capsys, model_dir, music_data):
    refused = 0
    for argv, values in _table(tmp_path, model_dir, music_data):
        for value in values:
            one_line_error([value if a == "{}" else a for a in argv], capsys)
            refused += 1
    assert refused > 250
    assert not (tmp_path / "o.mid").exists() and not (tmp_path / "d").exists()  # nothing was written
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()


# --------------------------------------------------------------- rows of the hardening issue


def test_generate_seconds_must_be_a_finite_positive_duration(model_dir, tmp_path, capsys):  # row 3
    base = ["generate", "--checkpoint", model_dir, "--prompt", FUR_ELISE, "--out", tmp_path / "o.mid"]
    assert one_line_error([*base, "--seconds", "-1"], capsys) == (
        "musicgpt generate: error: argument --seconds: must be more than 0 and at most 3600 seconds, got -1 "
        "(see musicgpt generate --help)"
    )
    for flag in ("--seconds", "--prompt-seconds"):
        for value in ("inf", "nan"):
            assert one_line_error([*base, flag, value], capsys) == (
                f"musicgpt generate: error: argument {flag}: expected a finite number, got '{value}' "
                "(see musicgpt generate --help)"
            )


def test_every_writer_checks_its_output_before_working(model_dir, tmp_path, capsys):  # row 4
    (tmp_path / "file").write_text("")
    bad = {
        tmp_path: f"{tmp_path}: a folder; give a file name",
        tmp_path
        / "file"
        / "o.mid": f"{tmp_path / 'file' / 'o.mid'}: {tmp_path / 'file'} is a file, not a folder",
    }
    npy = tmp_path / "ids.npy"
    np.save(npy, PerformanceTokenizer().encode(FUR_ELISE))
    for path, problem in bad.items():
        writers = [
            (["tokenize", FUR_ELISE, "--out", path], "--out"),
            (["detokenize", npy, path], "out"),
            (["generate", "--checkpoint", model_dir, "--prompt", FUR_ELISE, "--out", path], "--out"),
            (["attention", "--random-init", "music-tiny", "--midi", FUR_ELISE, "--out", path], "--out"),
            (
                [
                    "attention",
                    "--random-init",
                    "music-tiny",
                    "--midi",
                    FUR_ELISE,
                    "--out",
                    tmp_path / "p.html",
                ]
                + ["--png", path],
                "--png",
            ),
        ]
        for argv, flag in writers:
            assert one_line_error(argv, capsys).startswith(
                f"musicgpt {argv[0]}: error: argument {flag}: {problem}"
            )
    for argv in (["data", "build", PIANO_DIR, "--out"], ["demo", "--run-dir"]):
        err = one_line_error([*argv, tmp_path / "file"], capsys)
        assert f"{tmp_path / 'file'}: a file, not a folder" in err
    # read-only: /proc takes no new files, not even from root
    assert "/proc/x.mid: cannot write in /proc" in one_line_error(
        ["generate", "--checkpoint", model_dir, "--seconds", "600", "--out", "/proc/x.mid"], capsys
    )


def test_wav_without_fluidsynth_is_refused_before_sampling(model_dir, tmp_path, capsys, monkeypatch):  # row 5
    import musicgpt.generation.piano as piano

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled although --wav cannot be rendered")

    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth on it
    monkeypatch.setattr(piano, "continue_piano", no_sampling)
    argv = [
        "generate",
        "--checkpoint",
        model_dir,
        "--seconds",
        "2",
        "--num-samples",
        "3",
        "--out",
        tmp_path / "g.mid",
    ]
    assert one_line_error([*argv, "--wav"], capsys) == (
        "musicgpt: error: --wav needs the fluidsynth program (Debian: apt-get install fluidsynth)"
    )
    assert list(tmp_path.glob("*.mid")) == []


def test_every_midi_is_written_before_any_wav(model_dir, tmp_path, capsys, monkeypatch):  # row 5
    import musicgpt.audio as audio

    def failing_render(midi, wav):
        raise audio.MusicGPTError(f"fluidsynth failed on {midi}: no audio device")

    monkeypatch.setattr(audio, "wav_tools", lambda: ("fluidsynth", tmp_path / "sf2"))
    monkeypatch.setattr(audio, "render_wav", failing_render)
    argv = ["generate", "--checkpoint", model_dir, "--seconds", "2", "--num-samples", "3", "--seed", "0"]
    code, out, err = run_cli([*argv, "--out", tmp_path / "g.mid", "--wav"], capsys)
    assert code == 2  # after the progress bar, the error
    assert (
        err.splitlines()[-1]
        == f"musicgpt: error: fluidsynth failed on {tmp_path / 'g-1.mid'}: no audio device"
    )
    written = [tmp_path / f"g-{i}.mid" for i in (1, 2, 3)]
    assert out.splitlines() == [str(p) for p in written] and all(p.stat().st_size > 0 for p in written)


def test_ctrl_c_while_sampling_writes_what_was_sampled(model_dir, tmp_path, capsys, monkeypatch):  # row 15
    import musicgpt.generation.piano as piano

    real_stream = piano.generate_stream

    def interrupted_stream(*args, **kwargs):
        for n, step in enumerate(real_stream(*args, **kwargs)):
            if n == 200:
                raise KeyboardInterrupt
            yield step

    monkeypatch.setattr(piano, "generate_stream", interrupted_stream)
    # a complete result of an earlier run: an interrupted rerun must not replace it
    complete = FUR_ELISE.read_bytes()
    (tmp_path / "g-1.mid").write_bytes(complete)
    argv = ["generate", "--checkpoint", model_dir, "--prompt", FUR_ELISE, "--prompt-seconds", "3"]
    code, out, err = run_cli(
        [*argv, "--seconds", "3600", "--num-samples", "2", "--out", tmp_path / "g.mid", "--yes"], capsys
    )
    assert code == 130
    last = err.splitlines()[-1]  # after the progress bar
    assert last.startswith("musicgpt: interrupted: wrote the ") and last.endswith(
        " s sampled so far, as .partial files"
    )
    partials = [tmp_path / "g-1.partial.mid", tmp_path / "g-2.partial.mid"]
    assert out.splitlines() == [str(p) for p in partials]
    assert (tmp_path / "g-1.mid").read_bytes() == complete and not (tmp_path / "g-2.mid").exists()
    tok = PerformanceTokenizer()
    prompt_notes = len(tok.decode_notes(piano.cut_at_seconds(tok.encode(FUR_ELISE), 3.0)))
    for path in partials:
        written = tok.encode(path)
        assert len(tok.decode_notes(written)) >= prompt_notes  # the prompt, then what was sampled


def test_evaluate_refuses_data_of_another_tokenizer(model_dir, tmp_path, capsys):  # row 9
    from musicgpt.data.build import build_dataset

    build_dataset(TEXT_DIR / "sherlock.txt", tmp_path / "text", "bytes", workers=1, progress=False, log=print)
    capsys.readouterr()
    assert one_line_error(["evaluate", "--checkpoint", model_dir, "--data", tmp_path / "text"], capsys) == (
        f"musicgpt: error: the model {model_dir} reads performance tokens, but {tmp_path / 'text'} was built "
        "with the bytes tokenizer"
    )


def test_evaluate_counts_must_be_positive(model_dir, music_data, capsys):  # row 10
    base = ["evaluate", "--checkpoint", model_dir, "--data", music_data]
    for flag, value in (("--max-windows", "0"), ("--batch-size", "-2"), ("--batch-size", "0")):
        assert one_line_error([*base, flag, value], capsys) == (
            f"musicgpt evaluate: error: argument {flag}: must be at least 1, got {value} "
            "(see musicgpt evaluate --help)"
        )


def test_train_checks_its_values_where_they_are_parsed(music_data, tmp_path, capsys):  # row 10
    base = ["train", "--config", "piano_cpu", "--run_dir", tmp_path / "run", "--data.data_dir", music_data]
    assert one_line_error([*base, "--data.batch_size", "0"], capsys) == (
        'musicgpt: error: Parser key "data.batch_size": Not of type PositiveInt: 0 does not conform to restriction v>0'
    )
    assert one_line_error([*base, "--seed_everything", "-1"], capsys) == (
        "musicgpt: error: -1 is not in bounds, numpy accepts from 0 to 4294967295"
    )
    assert not (tmp_path / "run").exists()


def test_a_truncated_model_is_one_line(model_dir, tmp_path, capsys):  # row 11
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    for argv in (
        ["generate", "--checkpoint", broken, "--seconds", "1", "--out", tmp_path / "o.mid"],
        ["attention", "--checkpoint", broken, "--midi", FUR_ELISE, "--out", tmp_path / "p.html"],
    ):
        err = one_line_error(argv, capsys)
        assert err.startswith(f"musicgpt: error: {weights}: not a whole safetensors file (")


def test_config_and_tokenizer_files_that_are_not_yaml_or_json(tmp_path, capsys):  # row 13
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "five.yaml").write_text("data: 5\n")
    (tmp_path / "broken.json").write_text("{")
    build = ["data", "build", PIANO_DIR, "--out", tmp_path / "d"]
    cases = {
        (*build, "--config", FUR_ELISE): f"{FUR_ELISE}: binary data, not a config",
        (*build, "--config", tmp_path): f"{tmp_path}: a folder, not a config",
        (
            *build,
            "--config",
            tmp_path / "list.yaml",
        ): "a YAML config must be a mapping of settings, not a list",
        (*build, "--config", tmp_path / "five.yaml"): "its data section must be a mapping, not 5",
        (*build, "--tokenizer", FUR_ELISE): f"{FUR_ELISE}: binary data, not a tokenizer file",
        (
            *build,
            "--tokenizer",
            tmp_path / "broken.json",
        ): "not a JSON tokenizer file (Expecting property name",
        (
            "params",
            tmp_path,
        ): f"{tmp_path}: no config.yaml (musicgpt) or config.json (Hugging Face GPT-2) in it",
        ("params", tmp_path / "list.yaml"): "a YAML model config must be a mapping of settings, not a list",
        (
            "train",
            "--config",
            tmp_path / "list.yaml",
        ): "a YAML config must be a mapping of settings, not a list",
    }
    for argv, problem in cases.items():
        assert problem in one_line_error(list(argv), capsys)
    assert not (tmp_path / "d").exists()


def test_demo_checks_its_arguments_before_building_data(tmp_path, capsys):  # rows 13 and 15
    run_dir = tmp_path / "run"
    assert one_line_error(["demo", "--run-dir", run_dir, "--config", tmp_path / "missing.yaml"], capsys) == (
        f"musicgpt: error: {tmp_path / 'missing.yaml'}: no such config file "
        f"(bundled configs: {', '.join(CONFIGS)})"
    )
    for flag in ("--minutes", "--seconds"):
        assert f"argument {flag}: must be more than 0" in one_line_error(
            ["demo", "--run-dir", run_dir, flag, "-1"], capsys
        )
    assert not run_dir.exists()


def test_devices_seeds_temperatures_and_empty_ids(model_dir, tmp_path, capsys):  # row 14
    base = ["generate", "--checkpoint", model_dir, "--seconds", "1", "--out", tmp_path / "o.mid"]
    err = one_line_error([*base, "--device", "banana"], capsys)
    assert "argument --device: 'banana' is not a device (cpu, cuda, cuda:1, mps, ...)" in err
    if not torch.cuda.is_available():
        assert "argument --device: cuda: no cuda device on this machine" in one_line_error(
            [*base, "--device", "cuda"], capsys
        )
    err = one_line_error([*base, "--seed", "99999999999999999999999"], capsys)
    assert "argument --seed: must be in 0..4294967295, got 99999999999999999999999" in err
    assert "argument --temperature: expected a finite number, got 'inf'" in one_line_error(
        [*base, "--temperature", "inf"], capsys
    )
    (tmp_path / "empty.npy").write_bytes(b"")
    assert one_line_error(["detokenize", tmp_path / "empty.npy", tmp_path / "o.mid"], capsys) == (
        f"musicgpt: error: {tmp_path / 'empty.npy'}: not a .npy array of token ids (No data left in file)"
    )


def test_the_silent_surprises_now_say_what_they_do(model_dir, tmp_path, capsys):  # row 15
    base = ["generate", "--checkpoint", model_dir, "--prompt", FUR_ELISE, "--out", tmp_path / "o.mid"]
    # a prompt of 0 (or -5) seconds is no prompt: say so, rather than drop it without a word
    for value in ("0", "-5"):
        err = one_line_error([*base, "--prompt-seconds", value], capsys)
        assert f"argument --prompt-seconds: must be more than 0 and at most 3600 seconds, got {value}" in err
    # a prompt with no notes is not "start from nothing"
    empty = PIANO_DIR / "empty.mid"
    assert one_line_error([*base[:4], empty, "--seconds", "1", "--out", tmp_path / "o.mid"], capsys) == (
        f"musicgpt: error: {empty}: nothing to continue: no notes (no --prompt starts from nothing)"
    )
    # --out gen/ names a folder, not the samples' file name
    err = one_line_error([*base[:-2], "--num-samples", "2", "--out", f"{tmp_path}/gen/"], capsys)
    assert f"argument --out: {tmp_path}/gen/: a folder; give a file name" in err
    # hours of sampling are refused (an hour of music at most); Ctrl-C keeps what was sampled (above)
    assert "at most 3600 seconds, got 100000" in one_line_error([*base, "--seconds", "100000"], capsys)
    # the attention excerpt is a finite length
    att = ["attention", "--random-init", "music-tiny", "--midi", FUR_ELISE, "--out", tmp_path / "p.html"]
    assert "argument --seconds: expected a finite number, got 'nan'" in one_line_error(
        [*att, "--seconds", "nan"], capsys
    )
    assert list(tmp_path.iterdir()) == []


def test_tokenize_of_a_fifo_is_refused_not_a_hang(tmp_path):  # row 15, in a real process
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo.mid")
    result = subprocess.run(
        [sys.executable, "-m", "musicgpt.cli", "tokenize", str(tmp_path / "fifo.mid")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"musicgpt tokenize: error: argument midi: {tmp_path / 'fifo.mid'}: not a regular file "
        "(see musicgpt tokenize --help)\n"
    )


def test_train_reads_dash_c_as_its_config(tmp_path, capsys):
    """`-c` is LightningCLI's short `--config`: a bundled name or a file checked the same way."""
    from musicgpt.resources import config_path
    from musicgpt.training.cli import _bundled_configs

    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    for argv in (
        ["-c", listed],
        [f"-c{listed}"],
        [f"-c={listed}"],
        ["--config", listed],
        [f"--config={listed}"],
    ):
        assert one_line_error(["train", *argv], capsys) == (
            f"musicgpt: error: {listed}: a YAML config must be a mapping of settings, not a list"
        )
    bundled = str(config_path("piano_cpu"))
    assert _bundled_configs(["-c", "piano_cpu", "--trainer.max_steps", "3"]) == [
        "-c", bundled, "--trainer.max_steps", "3"
    ]  # fmt: skip
    assert _bundled_configs(["-cpiano_cpu", "-c=piano_cpu"]) == [f"-c{bundled}", f"-c={bundled}"]
