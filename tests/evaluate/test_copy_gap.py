"""`musicgpt evaluate --copy-gap`: per piece, the loss with and without the prompt cache and the
naive cache, the same numbers as the library computes."""

from __future__ import annotations

import math
import shutil

import numpy as np
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.evaluate.copy_gap import copy_gap, total
from musicgpt.evaluate.nll import token_log_probs
from musicgpt.generation.piano import cut_at_seconds
from musicgpt.tokenizers import vocab as V


def test_token_log_probs_read_every_token_once_through_overlapping_windows(tiny_checkpoint):
    model, tok = load_checkpoint(tiny_checkpoint)
    ids = tok.encode(PIANO_DIR / "fur-elise.mid")[:700].astype(np.int64)
    lp = token_log_probs(model, ids, context=256)
    assert math.isnan(lp[0]) and np.isfinite(lp[1:]).all()
    # the first window reads from the start: the same as one forward pass over it
    logits = model(__import__("torch").as_tensor(ids[None, :256])).float().log_softmax(-1)[0]
    expected = logits[np.arange(255), ids[1:256]].detach().numpy()
    np.testing.assert_allclose(lp[1:257][:255], expected, rtol=1e-5, atol=1e-5)


def test_cli_prints_the_library_numbers(tiny_checkpoint, tmp_path, capsys):
    for name in ("maple-leaf-rag.mid", "fur-elise.mid"):
        ids = cut_at_seconds(load_checkpoint(tiny_checkpoint)[1].encode(PIANO_DIR / name), 15.0)
        load_checkpoint(tiny_checkpoint)[1].decode(ids).write(str(tmp_path / name))
    assert (
        main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path), "--copy-gap"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == "piece tokens model +cache +naive copy gap with cache".split()
    model, tok = load_checkpoint(tiny_checkpoint)
    rows = [
        copy_gap(model, tok.encode(tmp_path / name).astype(np.int64), 256, name, key_of_id=V.MATCH_KEY_OF_ID)
        for name in ("fur-elise.mid", "maple-leaf-rag.mid")
    ]
    assert out[2:5] == [rows[0].row(), rows[1].row(), total(rows).row()]
    # a random model copies nothing: the naive cache of a rag's repeats gains a lot
    assert rows[1].model - rows[1].naive > 0.5 * rows[1].tokens


def test_copy_gap_and_continuations_are_two_runs(tiny_checkpoint, tmp_path, capsys):
    shutil.copy(PIANO_DIR / "fur-elise.mid", tmp_path / "a.mid")
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path)]
    assert main([*args, "--copy-gap", "--continuations"]) == 2
    assert "one at a time" in capsys.readouterr().err
