"""`musicgpt evaluate --copy-gap`: per piece, the loss with and without the prompt cache and the
naive cache, the same numbers as the library computes."""

from __future__ import annotations

import math
import shutil

import numpy as np
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.evaluate.copy_gap import copy_gap, sampler_distributions, total
from musicgpt.evaluate.nll import token_log_probs
from musicgpt.generation.piano import PianoPriors, continue_piano, cut_at_seconds, default_context
from musicgpt.generation.sampling import SamplingConfig


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
    assert out[1].split() == "piece tokens model sampler +naive copy gap w/ sampler".split()
    model, tok = load_checkpoint(tiny_checkpoint)
    rows = [
        copy_gap(model, tok.encode(tmp_path / name).astype(np.int64), 256, name, tokenizer=tok)
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


def test_the_scored_sampler_is_the_one_that_samples():
    """Greedy piano continuation picks, at every step, the argmax of what `sampler_distributions`
    scores on the same tokens: the grammar, release prior and note cache applied as decode.py does.
    (Without the pitch prior: the scorer reads a piece from its first token, with no prompt to take
    a register from, and the prompt's exact pitches do move a greedy pick.)"""
    model, tok = load_checkpoint("piano-small")
    prompt = cut_at_seconds(tok.encode(PIANO_DIR / "maple-leaf-rag.mid"), 6.0).astype(np.int64)
    greedy = SamplingConfig(temperature=0, prompt_cache=1.0)
    no_register = PianoPriors(pitch=0.0)
    sample = continue_piano(model, tok, prompt, 3.0, sampling=greedy, seed=0, priors=no_register).samples[0]
    ids = np.concatenate([prompt, sample])
    context = default_context(model)
    assert len(ids) <= context  # one window: the scorer reads what the decoder read
    picked, model_picked = [], []
    for i, model_logp, sampler_logp in sampler_distributions(model, tok, ids, context):
        if len(prompt) <= i < len(ids) - 1:  # the last token may be a shift cut to end on time
            picked.append(int(np.argmax(sampler_logp)))
            model_picked.append(int(np.argmax(model_logp)))
    assert picked == sample[:-1].tolist()
    assert len(picked) > 20 and model_picked != picked  # the sampler is not the model alone here
