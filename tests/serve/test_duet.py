"""The duet's engine without the web: the incrementally fed KV cache against the uncached model,
the player's events as tokens, answers, cuts, speculation and the session's MIDI."""

from __future__ import annotations

import io

import numpy as np
import pretty_midi
import pytest
import torch

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.serve import duet as D
from musicgpt.serve.duet import DuetError, DuetSession, LiveContext, model_sharing_weights
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()


def tiny(relative: bool) -> GPT:
    torch.manual_seed(0)
    extra = {"position_encoding": "relative", "max_relative_distance": 64} if relative else {}
    return GPT(GPTConfig.preset("music-tiny", block_size=64, **extra)).eval()


def reference(model: GPT, tokens: list[int], window: int | None = None) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([tokens]), window=window)[0, -1]


@pytest.mark.parametrize("relative", [False, True])
def test_live_context_matches_the_uncached_model_through_steps_and_cuts(relative):
    model = tiny(relative)
    live = LiveContext(model_sharing_weights(model), context=48)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 388, 40).tolist()
    live.append(tokens[:1])
    for n in range(1, 40):  # one token at a time, as a player plays
        torch.testing.assert_close(live.logits(), reference(model, tokens[:n]), rtol=1e-4, atol=1e-4)
        live.append(tokens[n : n + 1])
    # an answer of 6 tokens cut back to 2 of them, then the player goes on
    live.append(rng.integers(0, 388, 6).tolist())
    live.logits()
    live.truncate(42)
    torch.testing.assert_close(live.logits(), reference(model, live.tokens), rtol=1e-4, atol=1e-4)
    live.append([60, 300])
    torch.testing.assert_close(live.logits(), reference(model, live.tokens), rtol=1e-4, atol=1e-4)
    assert live.prefills == 0  # all of it by decode steps


def test_live_context_learned_positions_slide_as_generate_stream():
    model = tiny(False)
    live = LiveContext(model_sharing_weights(model), context=32)
    tokens = np.random.default_rng(1).integers(0, 388, 40).tolist()
    for t in tokens:
        live.append([t])
        live.logits()
    # full after 32: the 33rd token and the 23 before it (3/4) were prefilled at positions 0..
    assert live.prefills == 1 and live.base == 33 - 24
    torch.testing.assert_close(live.logits(), reference(model, tokens[live.base :]), rtol=1e-4, atol=1e-4)


def test_live_context_relative_ring_reads_context_plus_margin(monkeypatch):
    monkeypatch.setattr(D, "RING_MARGIN", 8)
    monkeypatch.setattr(D, "CHUNK_TOKENS", 2)
    model = tiny(True)
    live = LiveContext(model_sharing_weights(model), context=16)
    tokens = np.random.default_rng(2).integers(0, 388, 40).tolist()
    for t in tokens:  # 40 tokens through a ring of 24 slots
        live.append([t])
        live.logits()
    assert live.prefills == 0
    # the ring is sliding-window attention over its 24 slots, every layer
    torch.testing.assert_close(live.logits(), reference(model, tokens, window=24), rtol=1e-4, atol=1e-4)
    # a cut of 5 (<= margin - chunk) keeps stepping; one of 10 refills the last 16 tokens
    live.truncate(35)
    live.logits()
    assert live.prefills == 0
    live.append(tokens[:3])
    live.logits()
    live.truncate(28)
    torch.testing.assert_close(live.logits(), reference(model, live.tokens[-16:]), rtol=1e-4, atol=1e-4)
    assert live.prefills == 1


@pytest.mark.parametrize("relative", [False, True])
def test_pending_tokens_go_in_chunks_of_one_forward(relative, monkeypatch):
    monkeypatch.setattr(D, "CHUNK_TOKENS", 8)
    model = tiny(relative)
    live = LiveContext(model_sharing_weights(model), context=48)
    tokens = np.random.default_rng(4).integers(0, 388, 40).tolist()
    live.append(tokens[:3])
    assert live.sync(max_passes=1) and live.n_fed == 3  # a player's event: one forward
    torch.testing.assert_close(live.logits(), reference(model, tokens[:3]), rtol=1e-4, atol=1e-4)
    live.append(tokens[3:40])
    assert not live.sync(max_passes=2) and live.n_fed == 19  # 8 and 8 more
    torch.testing.assert_close(live.logits(), reference(model, tokens), rtol=1e-4, atol=1e-4)
    assert live.prefills == 0


def test_a_flood_of_tokens_is_one_prefill_of_the_window():
    model = tiny(True)
    live = LiveContext(model_sharing_weights(model), context=32)
    live.append(np.random.default_rng(3).integers(0, 388, 500).tolist())
    assert live.sync(max_passes=1)  # a backlog of a whole context: one prefill of the window
    assert (live.prefills, live.base, live.n_fed) == (1, 500 - 32, 500)


# --- the session -----------------------------------------------------------------------------


def session(seed=0, relative=True, context=64) -> DuetSession:
    return DuetSession(model_sharing_weights(tiny(relative)), TOK, context=context, seed=seed)


def names(ids) -> list[str]:
    return [V.id_to_name(int(i)) for i in ids]


def test_player_events_become_the_encoders_tokens():
    s = session()
    s.play([[1000.0, 60, 80], [1250.0, 60, 0], [1300.0, 64, 79], [1300.0, 67, 100]])
    s.play([[2000.0, 99, 0]])  # the end of a note that never began: nothing
    assert names(s.live.tokens) == [
        "EOS", "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_25", "NOTE_OFF_60", "TIME_SHIFT_5",
        "NOTE_ON_64", "VELOCITY_25", "NOTE_ON_67",
    ]  # fmt: skip
    ids = np.asarray(s.live.tokens)
    notes = TOK.decode_notes(ids)
    assert notes.pitch.tolist() == [60, 64, 67] and notes.start.tolist() == [0.0, 0.3, 0.3]
    assert s.owner == [D.PLAYER] * len(ids)


def test_silences_and_held_notes_are_bounded():
    s = session()
    s.play([[0.0, 60, 80], [600_000.0, 62, 80]])  # a key held for ten minutes, then another
    # the silence is cut to MAX_GAP_SECONDS, and no note outlasts the tokenizer's longest
    assert s.clock == round(D.MAX_GAP_SECONDS * 100)
    s.play([[700_000.0, 62, 0]])
    notes = TOK.decode_notes(np.asarray(s.live.tokens))
    assert (notes.end - notes.start).max() <= TOK.max_note_seconds
    assert s.clock == 2 * round(D.MAX_GAP_SECONDS * 100)
    for bad, message in [([[1, 2]], "an event is"), ([[-1, 60, 80]], "time"), ([[0, 128, 80]], "pitch"),
                         ([[0, 60, 1.5]], "velocity"), ([[float("nan"), 60, 80]], "time")]:  # fmt: skip
        with pytest.raises(DuetError, match=message):
            s.play(bad)


def play_phrase(s: DuetSession, t0: float, pitches=(60, 62, 64, 65, 67)) -> float:
    t = t0
    for p in pitches:
        s.play([[t, p, 80]])
        s.play([[t + 200, p, 0]])
        t += 250
    return t - 50  # the last event


def answer_all(s: DuetSession, t_end: float, seconds: float = 2.0, temperature: float = 1.0):
    answer, out = s.begin_answer(t_end, seconds, temperature)
    out = out + s.sample()
    while not answer.done:
        out += s.sample(16, until_note=False)
    return answer, out


def test_an_answer_starts_with_a_note_at_the_pause_and_lasts_exactly_its_seconds():
    s = session()
    last = play_phrase(s, 1000.0)
    answer, out = answer_all(s, last + 1000, seconds=2.0)
    assert out[0]["type"] == "on" and out[0]["t"] == 0.0
    assert out[-1]["type"] == "end" and out[-1]["t"] == 2.0
    # the pause of 1 s between the last NOTE_OFF and the answer is one shift
    assert names(s.live.tokens[answer.first - 1 : answer.first]) == ["TIME_SHIFT_100"]
    assert s.clock == answer.start_step + 200 and not s.model_on
    # every note the page was sent is in the piece, as the model's
    notes = s.notes()
    model = notes["who"] == D.MODEL
    sent = [m["pitch"] for m in out if m["type"] == "on"]
    assert notes["notes"].pitch[model].tolist() == sent
    assert np.all(notes["notes"].start[model] >= answer.start_step / 100)
    assert np.all(notes["notes"].end[model] <= answer.limit_step / 100 + 1e-9)
    with pytest.raises(DuetError, match="0.5-30"):
        s.begin_answer(last + 5000, 31.0)


def test_playing_during_an_answer_cuts_it_there():
    s = session(seed=1)
    last = play_phrase(s, 1000.0)
    answer, out = answer_all(s, last + 1000, seconds=4.0)
    cut_ms = last + 1000 + 1500  # 1.5 s into the answer
    messages = s.play([[cut_ms, 72, 90]])
    assert messages == [{"type": "cut", "answer": 1, "t": 1.5}]
    notes = s.notes()["notes"]
    who = s.notes()["who"]
    start = answer.start_step / 100
    assert np.all(notes.start[who == D.MODEL] < start + 1.5)
    assert np.all(notes.end[who == D.MODEL] <= start + 1.5 + 1e-9)
    assert notes.start[-1] == pytest.approx(start + 1.5) and who[-1] == D.PLAYER
    # the KV cache follows the cut: the next answer reads the piece as it now is
    s.play([[cut_ms + 300, 72, 0]])
    torch.testing.assert_close(
        s.live.logits(),
        reference(s.live.model, s.live.tokens),
        rtol=1e-4,
        atol=1e-4,
    )


def test_speculation_taken_over_or_undone_leaves_the_same_piece():
    plain, bet, undone = session(seed=5), session(seed=5), session(seed=5)
    for s in (plain, bet, undone):
        last = play_phrase(s, 1000.0)
        s.live.sync()
    _, expected = answer_all(plain, last + 1000)
    bet.pause_ms = 1000.0
    assert bet.speculate(2.0, 1.0)
    answer, got = answer_all(bet, last + 1000)
    for m in got + expected:
        m.pop("serverMs", None)  # a timing
    assert got == expected and bet.live.tokens == plain.live.tokens

    undone.pause_ms = 1000.0
    before = list(undone.live.tokens)
    assert undone.speculate(2.0, 1.0) and len(undone.live.tokens) > len(before)
    undone.play([[last + 700, 70, 80]])  # the player goes on before the pause ends
    assert undone.speculation is None and undone.live.tokens[: len(before)] == before
    assert names(undone.live.tokens[len(before) :]) == ["TIME_SHIFT_70", "NOTE_ON_70"]
    assert undone.n_answers == 0 and undone.answer is None


def test_the_session_as_midi_holds_both_parts_in_time_order():
    s = session(seed=2)
    last = play_phrase(s, 1000.0)
    answer_all(s, last + 1000, seconds=2.0)
    play_phrase(s, last + 1000 + 2500, pitches=(72, 71))
    pm = pretty_midi.PrettyMIDI(io.BytesIO(s.midi_bytes()))
    player, model = pm.instruments
    assert (player.name, model.name) == ("player", "musicgpt")
    assert [n.pitch for n in player.notes] == [60, 62, 64, 65, 67, 72, 71]
    assert [round(n.start, 2) for n in player.notes] == [0.0, 0.25, 0.5, 0.75, 1.0, 4.7, 4.95]
    assert len(model.notes) > 0
    assert 2.2 <= min(n.start for n in model.notes) and max(n.end for n in model.notes) <= 4.2 + 1e-6
