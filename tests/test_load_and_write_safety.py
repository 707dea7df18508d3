"""Issue 24's remaining tracebacks and silent acceptances: bad checkpoints refused at load, outputs
that would destroy inputs refused before work, a full disk in one line, requests sized first."""

from __future__ import annotations

import resource
import shutil
import signal

import pytest
import torch
import yaml
from conftest import PIANO_DIR
from safetensors.torch import load_file, save_file

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.errors import MusicGPTError

FUR_ELISE = PIANO_DIR / "fur-elise.mid"


@pytest.fixture
def model_dir(tiny_checkpoint, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, d)
    return d


def _rewrite_weights(model_dir, change):
    weights = load_file(model_dir / "model.safetensors")
    change(weights)
    save_file(weights, model_dir / "model.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(model_dir, value):
    _rewrite_weights(
        model_dir,
        lambda w: (
            w["lm_head.weight" if "lm_head.weight" in w else "transformer.wte.weight"]
            .view(-1)
            .__setitem__(3, value)
        ),
    )
    with pytest.raises(MusicGPTError, match=r"holds 1 NaN or infinite value\(s\); the model cannot be used"):
        load_checkpoint(model_dir)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_weights_that_are_not_floats_are_refused(model_dir, dtype):
    name = "transformer.ln_f.weight"
    _rewrite_weights(model_dir, lambda w: w.__setitem__(name, w[name].to(dtype)))
    code = {torch.int8: "I8", torch.bool: "BOOL"}[dtype]
    with pytest.raises(MusicGPTError) as e:
        load_checkpoint(model_dir)
    assert (
        str(e.value)
        == f"{model_dir / 'model.safetensors'}: {name} holds {code} values; model weights are floats"
    )


@pytest.mark.parametrize(
    "text, problem",
    [("{not json", "not a JSON tokenizer file (Expecting property name enclosed in double quotes at line 1)"),
     ("[1, 2]", "a JSON tokenizer file must be an object, not a list")],
)  # fmt: skip
def test_a_broken_tokenizer_json_is_one_line(model_dir, text, problem, capsys):
    (model_dir / "tokenizer.json").write_text(text)
    argv = ["generate", "--checkpoint", str(model_dir), "--seconds", "1", "--out", str(model_dir / "o.mid")]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"musicgpt: error: {model_dir / 'tokenizer.json'}: {problem}\n"


def test_a_music_model_with_a_text_tokenizer_is_refused(model_dir, capsys):
    (model_dir / "tokenizer.json").write_text('{"name": "bytes"}')
    assert (
        main(["evaluate", "--checkpoint", str(model_dir), "--data", str(FUR_ELISE), "--continuations"]) == 2
    )
    assert capsys.readouterr().err == (
        f"musicgpt: error: {model_dir}: the model reads 390 token ids but its tokenizer (bytes) has 257: they "
        "were not trained together\n"
    )


@pytest.mark.parametrize("field, value, expected", [("bias", "maybe", "bool"), ("n_layer", 2.5, "int"),
                                                    ("dropout", "none", "float"), ("max_relative_distance", "x", "int or null")])  # fmt: skip
def test_config_values_are_typed(model_dir, field, value, expected, capsys):
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config[field] = value
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(MusicGPTError) as e:
        load_checkpoint(model_dir)
    assert str(e.value) == f"{model_dir / 'config.yaml'}: {field} must be {expected}, got {value!r}"


def test_outputs_that_are_inputs_or_each_other_are_refused_before_work(tiny_checkpoint, tmp_path, capsys):
    prompt = tmp_path / "p.mid"
    prompt.write_bytes(FUR_ELISE.read_bytes())
    base = ["generate", "--checkpoint", str(tiny_checkpoint), "--seconds", "1"]
    cases = [
        (["--prompt", prompt, "--out", prompt], f"--out {prompt} is the --prompt file: writing it would destroy the input"),
        (["--out", tmp_path / "x.mid", "--png", tmp_path / "x.mid"],
         f"--png {tmp_path / 'x.mid'} and --out {tmp_path / 'x.mid'} are the same file: one would overwrite the other"),
        (["--num-samples", "2", "--out", tmp_path / "y.mid", "--png", tmp_path / "y-1.mid"],
         f"--png {tmp_path / 'y-1.mid'} and --out (sample 1) {tmp_path / 'y-1.mid'} are the same file: one would "
         "overwrite the other"),
        (["--out", tmp_path / "z.png", "--png", tmp_path / "z.png"],
         f"--png {tmp_path / 'z.png'} and --out {tmp_path / 'z.png'} are the same file: one would overwrite the other"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *map(str, extra)]) == 2
        assert capsys.readouterr().err == f"musicgpt: error: {message}\n"
    assert prompt.read_bytes() == FUR_ELISE.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mid"]


def test_detokenize_refuses_to_write_over_its_ids(tmp_path, capsys):
    ids = tmp_path / "ids.npy"
    assert main(["tokenize", str(FUR_ELISE), "--out", str(ids)]) == 0
    before = ids.read_bytes()
    assert main(["detokenize", str(ids), str(ids)]) == 2
    assert capsys.readouterr().err.endswith(
        f"the output {ids} is the ids file: writing it would destroy the input\n"
    )
    assert ids.read_bytes() == before


def test_a_full_disk_in_tokenize_is_one_line_and_keeps_the_old_file(tmp_path, capsys):
    out = tmp_path / "ids.npy"
    out.write_bytes(b"the old file")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        code = main(["tokenize", str(FUR_ELISE), "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert code == 2
    assert capsys.readouterr().err == (
        f"musicgpt: error: {out}: cannot write: file too large (the previous file is unchanged)\n"
    )
    assert out.read_bytes() == b"the old file" and [p.name for p in tmp_path.iterdir()] == ["ids.npy"]


def test_a_full_disk_after_sampling_is_one_line(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "g.mid"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50, hard))
    try:
        code = main(
            [
                "generate",
                "--checkpoint",
                str(tiny_checkpoint),
                "--seconds",
                "1",
                "--out",
                str(out),
                "--seed",
                "0",
            ]
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"musicgpt: error: {out}: cannot write: file too large (nothing was written)"
    )
    assert list(tmp_path.iterdir()) == []


def test_generate_text_with_invalid_utf8_is_one_line(tiny_checkpoint, capsys):
    text = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--text", text]) == 2
    assert capsys.readouterr().err == (
        "musicgpt: error: --text is not valid UTF-8 (a byte that is no UTF-8 character at position 3)\n"
    )


def test_huge_requests_are_sized_and_refused_without_yes(tiny_checkpoint, tmp_path, capsys):
    argv = ["generate", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "g.mid")]
    assert main([*argv, "--num-samples", "256", "--seconds", "3600"]) == 2
    assert capsys.readouterr().err == (
        "musicgpt: error: 256 samples x 3600 s is 256.0 hours of music: up to 92.2M tokens and 2.2 GB of memory "
        "while sampling; add --yes to go ahead, or ask for at most 4 hours in all\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_progress_to_a_file_is_a_line_every_few_seconds():
    import io

    from musicgpt.commands.generate import Progress

    out = io.StringIO()
    clock = iter([1.0, 2.0, 6.0, 7.0, 12.5])
    bar = Progress(30, every=5.0, file=out)
    bar._clock, bar._last = lambda: next(clock), 0.0
    for seconds in (1, 2, 3, 4, 5):
        bar.update(seconds)
    bar.close()
    assert out.getvalue() == "music generated: 3.0/30 s\nmusic generated: 5.0/30 s\n"


def test_ctrl_c_in_text_mode_prints_the_text_so_far(tmp_path, capsys, monkeypatch):
    import musicgpt.generation.decode as decode
    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers.text import ByteTokenizer

    tok = ByteTokenizer()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)
    GPT(config).save_pretrained(tmp_path / "text")
    tok.save(tmp_path / "text" / "tokenizer.json")
    real_stream = decode.generate_stream
    steps = []

    def interrupted_stream(*args, **kwargs):
        for n, step in enumerate(real_stream(*args, **kwargs)):
            if n == 20:
                raise KeyboardInterrupt
            steps.append(step)
            yield step

    monkeypatch.setattr(decode, "generate_stream", interrupted_stream)
    argv = ["generate", "--checkpoint", str(tmp_path / "text"), "--text", "Once", "--seed", "0"]
    assert main([*argv, "--max-new-tokens", "500"]) == 130
    out, err = capsys.readouterr()
    assert err == "musicgpt: interrupted: printed the text sampled so far\n"
    sampled = [int(s[0]) for s in steps]
    if tok.eos_id in sampled:  # a document ends at EOS: nothing after it is printed
        sampled = sampled[: sampled.index(tok.eos_id)]
    expected = tok.decode(sampled)
    assert out == "Once" + expected + "\n" and len(steps) == 20


def test_a_full_disk_in_a_library_write_is_one_line_too(monkeypatch, capsys):
    import errno

    import musicgpt.commands.tokenize as tokenize

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/logs/metrics.csv")

    monkeypatch.setattr(tokenize, "run_tokenize", full)
    assert main(["tokenize", str(FUR_ELISE)]) == 2
    assert (
        capsys.readouterr().err
        == "musicgpt: error: runs/x/logs/metrics.csv: cannot write: no space left on device\n"
    )


def test_a_training_checkpoint_whose_weights_do_not_fit_is_one_line(tmp_path):
    """A .ckpt whose weights miss a tensor, or have another shape, is refused naming the file (it
    was a RuntimeError from load_state_dict, many lines long)."""
    from musicgpt.model.gpt import GPT, GPTConfig

    config = GPTConfig.preset("music-tiny", n_layer=1)
    state = {f"model.{k}": v for k, v in GPT(config).state_dict().items()}
    good = tmp_path / "good.ckpt"
    torch.save({"hyper_parameters": {"config": config.to_dict()}, "state_dict": state}, good)
    assert load_checkpoint(good)[0].config == config
    missing = tmp_path / "missing.ckpt"
    state.pop("model.transformer.ln_f.weight")
    torch.save({"hyper_parameters": {"config": config.to_dict()}, "state_dict": state}, missing)
    with pytest.raises(MusicGPTError) as info:
        load_checkpoint(missing)
    assert str(info.value) == (
        f"{missing}: weights do not fit the config: missing ['transformer.ln_f.weight'], unexpected []"
    )
