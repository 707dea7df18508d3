"""`musicgpt params`: the parameter table by module."""

from __future__ import annotations

from musicgpt.cli import main
from musicgpt.commands.params import param_rows
from musicgpt.model.gpt import GPTConfig


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
