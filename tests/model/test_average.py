"""`python -m musicgpt.average`: the weights of models of one shape, averaged (a model soup)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from musicgpt.average import average_state_dicts, main
from musicgpt.checkpoints import load_checkpoint
from musicgpt.errors import MusicGPTError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer


def tiny(seed: int, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(GPTConfig.preset("music-tiny"), **changes))


def saved(model: GPT, directory):
    model.save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory


def test_each_tensor_is_the_weighted_sum():
    a, b = tiny(0).state_dict(), tiny(1).state_dict()
    out = average_state_dicts([a, b], [0.25, 0.75])
    assert out.keys() == a.keys()
    for key in a:
        assert torch.equal(out[key], 0.25 * a[key].float() + 0.75 * b[key].float()), key


def test_a_larger_vocabulary_is_cut_to_the_first_models():
    """The FIM tokens came after EOS and PAD: a model trained since has 3 more rows, dropped."""
    small, large = tiny(0), tiny(1, vocab_size=GPTConfig.preset("music-tiny").vocab_size + 3)
    out = average_state_dicts([small.state_dict(), large.state_dict()], [0.5, 0.5])
    rows = small.config.vocab_size
    for key in ("transformer.wte.weight", "lm_head.weight"):
        expected = 0.5 * small.state_dict()[key] + 0.5 * large.state_dict()[key][:rows]
        assert torch.equal(out[key], expected)


def test_ids_a_model_lacks_come_from_the_models_that_have_them():
    """A FIM fine-tune first, the model it started from second: the shared ids are averaged, the 3
    FIM rows are the fine-tune's own (the weighted mean over the one model that has them)."""
    small, large = tiny(0), tiny(1, vocab_size=GPTConfig.preset("music-tiny").vocab_size + 3)
    out = average_state_dicts([large.state_dict(), small.state_dict()], [0.25, 0.75])
    rows = small.config.vocab_size
    for key in ("transformer.wte.weight", "lm_head.weight"):
        big, little = large.state_dict()[key], small.state_dict()[key]
        assert out[key].shape == big.shape
        assert torch.allclose(out[key][:rows], 0.25 * big[:rows] + 0.75 * little, atol=1e-7)
        assert torch.equal(out[key][rows:], big[rows:])


def test_models_of_another_shape_are_refused_by_name():
    with pytest.raises(
        MusicGPTError,
        match=r"wide's transformer\.wte\.weight is \(390, 128\), a's \(390, 64\): models of one shape only$",
    ):
        average_state_dicts(
            [tiny(0).state_dict(), tiny(1, n_embd=128).state_dict()], [0.5, 0.5], ["a", "wide"]
        )
    with pytest.raises(MusicGPTError, match="has no tensor transformer.h.1"):
        average_state_dicts([tiny(0).state_dict(), tiny(1, n_layer=1).state_dict()], [0.5, 0.5], ["a", "b"])


@pytest.mark.parametrize("weights", [[0.5], [0.7, 0.7], [1.5, -0.5], [float("nan"), 1.0]])
def test_weights_are_one_per_model_at_least_0_summing_to_1(weights):
    with pytest.raises(MusicGPTError):
        average_state_dicts([tiny(0).state_dict(), tiny(1).state_dict()], weights)


def test_the_command_writes_a_model_that_loads_and_predicts_as_the_average(tmp_path, capsys):
    a, b = saved(tiny(0), tmp_path / "a"), saved(tiny(1), tmp_path / "b")
    assert main([str(a), str(b), "--weights", "0.3,0.7", "--out", str(tmp_path / "soup")]) == 0
    assert "0.3 x" in capsys.readouterr().out
    soup, tokenizer = load_checkpoint(tmp_path / "soup")
    assert isinstance(tokenizer, PerformanceTokenizer)
    expected = GPT(tiny(0).config)
    expected.load_state_dict(average_state_dicts([tiny(0).state_dict(), tiny(1).state_dict()], [0.3, 0.7]))
    ids = torch.arange(0, 64)[None] % soup.config.vocab_size
    with torch.no_grad():
        assert torch.equal(soup(ids)[0], expected.eval()(ids)[0])


def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys):
    a, b = saved(tiny(0), tmp_path / "a"), saved(tiny(1, n_layer=1), tmp_path / "b")
    out = tmp_path / "soup"
    cases = [
        ([str(a), str(a), "--weights", "0.5,x"], "--weights: numbers separated by commas"),
        ([str(a), str(a), "--weights", "0.6,0.6"], "sum to 1"),
        ([str(a)], "two or more models"),
        ([str(a), str(tmp_path / "missing")], "no such checkpoint"),
        ([str(a), str(b)], "n_layer is 1"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(a), str(a), "--out", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
