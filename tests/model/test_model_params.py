"""`musicgpt params`: the parameter table by module."""

from __future__ import annotations

import pytest

from musicgpt.cli import main
from musicgpt.commands.params import param_rows
from musicgpt.model.gpt import GPT, PRESETS, GPTConfig
from musicgpt.models import bundled_model_dir


def test_gpt2_table_matches_the_known_breakdown(capsys):
    assert main(["params", "gpt2"]) == 0
    out = capsys.readouterr().out
    lines = {
        line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
        for line in out.splitlines()[1:]
        if line[0] != "-"
    }
    assert lines["transformer.wte (token embedding)"] == "38,597,376"  # 50257 x 768
    assert lines["transformer.wpe (position embedding)"] == "786,432"  # 1024 x 768
    assert lines["h.N.attn.c_attn"] == "1,771,776"  # 768 x 2304 + 2304
    assert lines["h.N.mlp.c_fc"] == "2,362,368"  # 768 x 3072 + 3072: the bias the 124,410,624 figure misses
    assert lines["one block"] == "7,087,872"
    assert lines["transformer.ln_f"] == "1,536"
    assert lines["total"] == "124,439,808"


def test_rows_add_up_for_a_yaml_config(tmp_path, capsys):
    config = GPTConfig.preset("music-small", bias=False)
    config.to_yaml(tmp_path / "m.yaml")
    rows = dict(param_rows(config))
    parts = [
        "transformer.wte (token embedding)",
        "transformer.wpe (position embedding)",
        "transformer.h (4 blocks)",
        "transformer.ln_f",
    ]
    assert sum(rows[p] for p in parts) == rows["total"]
    assert rows["transformer.h (4 blocks)"] == 4 * rows["  one block"] == 4 * 12 * 256 * 256 + 4 * 2 * 256
    assert main(["params", str(tmp_path / "m.yaml")]) == 0
    assert f"{rows['total']:,}" in capsys.readouterr().out


def test_unknown_config_is_one_line_error(capsys):
    assert main(["params", "gpt5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("musicgpt: error: 'gpt5' is neither a model preset") and err.count("\n") == 1


def _table(out: str) -> dict[str, str]:
    return {
        line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
        for line in out.splitlines()[1:]
        if line[0] != "-"
    }


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_prints_a_table_that_adds_up(preset, capsys):
    assert main(["params", preset]) == 0
    out = capsys.readouterr().out
    table = {k: int(v.replace(",", "")) for k, v in _table(out).items()}
    config = GPTConfig.preset(preset)
    parts = [
        k
        for k in table
        if k.startswith(("transformer.wte", "transformer.wpe", "transformer.h ", "transformer.ln_f"))
    ]
    assert sum(table[p] for p in parts) == table["total"]
    assert ("transformer.wpe (position embedding)" in table) == (config.position_encoding == "learned")


def test_relative_preset_counts_its_distance_tables(capsys):
    assert main(["params", "music-20m-relative"]) == 0  # was a traceback: t.wpe is None
    table = _table(capsys.readouterr().out)
    assert table["h.N.attn.rel_emb (relative distances)"] == "262,144"  # 8 heads x 512 distances x 64
    assert table["total"] == f"{GPT(GPTConfig.preset('music-20m-relative')).num_params():,}"


def test_a_shipped_model_by_name(capsys):
    assert main(["params", "piano-small"]) == 0
    out = capsys.readouterr().out
    shipped = GPT.from_pretrained(bundled_model_dir("piano-small"))
    assert out.startswith("piano-small: ")
    assert _table(out)["total"] == f"{shipped.num_params():,}"


@pytest.mark.parametrize("encoding", ["learned", "relative", "rope"])
def test_a_checkpoint_directory_and_a_training_run(tmp_path, capsys, encoding):
    config = GPTConfig(
        vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, position_encoding=encoding
    )
    model = GPT(config)
    model.save_pretrained(tmp_path / "run" / "model")
    for spec in (tmp_path / "run" / "model", tmp_path / "run"):  # the model, or the run that made it
        assert main(["params", str(spec)]) == 0
        out = capsys.readouterr().out
        assert f"{encoding} positions" in out
        assert _table(out)["total"] == f"{model.num_params():,}"


def test_a_hugging_face_directory(tmp_path, capsys):
    from musicgpt.model.hf import export_hf

    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    export_hf(model, tmp_path / "hf")
    assert main(["params", str(tmp_path / "hf")]) == 0
    assert _table(capsys.readouterr().out)["total"] == f"{model.num_params():,}"


def test_a_directory_without_a_config_is_one_line_error(tmp_path, capsys):
    assert main(["params", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"musicgpt: error: {tmp_path}: no config.yaml") and err.count("\n") == 1
