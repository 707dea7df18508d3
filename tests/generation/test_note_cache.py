"""The note cache: repeats found on the notes' skeleton (pitch intervals and onset gaps), whatever
the NOTE_OFFs and velocities around them; proposals translated to the next token from where the row
stands; NOTE_OFF probabilities left to the model; and a piano continuation that copies a passage
when the model has no opinion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from musicgpt.generation.note_cache import CHORD_STEPS, NOTE_GATE, NoteCache, gap_key
from musicgpt.generation.piano import continue_piano
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.resources import piano_corpus
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

ON, OFF, VEL, EOS = V.NOTE_ON_OFFSET, V.NOTE_OFF_OFFSET, V.VELOCITY_OFFSET - 1, V.EOS_ID


def shift(steps: int) -> int:
    return int(V.shift_id(steps))


def phrase(root: int, offs_late: bool = False) -> list[int]:
    """Four notes a third, a third and a fourth apart; 250 ms, 250 ms, 500 ms between onsets.
    offs_late: each NOTE_OFF comes after the shift instead of 100 ms before the next onset."""
    out = [VEL + 20]
    for pitch, gap in ((root, 25), (root + 4, 25), (root + 7, 50), (root + 12, 25)):
        out.append(ON + pitch)
        if offs_late:
            out += [shift(gap), OFF + pitch]
        else:
            out += [shift(gap - 10), OFF + pitch, shift(10)]
    return out


def proposal(history: list[int], gate=NOTE_GATE) -> tuple[int, float]:
    q, lam = NoteCache(np.array([history]), gate=gate).distribution()
    return int(q[0].argmax()), float(lam[0])


GATE4 = dataclasses.replace(NOTE_GATE, min_match=4)


def test_a_transposed_repeat_is_continued_transposed():
    # the phrase on C, then its first three notes a fourth higher: the cache waits as the phrase
    # did (250 - 100 ms: up to where it ended its note there), then plays the fourth note, transposed
    heard = phrase(60) * 2 + [ON + 65, shift(25), OFF + 65, ON + 69, shift(25), OFF + 69, ON + 72]
    token, lam = proposal(heard, GATE4)
    assert token == shift(40) and lam > 0  # the source ended its note 400 ms after the onset
    token, _ = proposal(heard + [shift(40), OFF + 72, shift(10)], GATE4)
    assert token == ON + 77  # 500 ms reached: the octave above the phrase's root, 65 + 12


def test_note_offs_placed_differently_still_match():
    heard = phrase(60) * 2 + phrase(60, offs_late=True)[:5]  # ... ON 60, shift 25, OFF 60, ON 64
    token, lam = proposal(heard, dataclasses.replace(NOTE_GATE, min_match=3))
    assert lam > 0
    assert token == shift(15)  # where the first copy stopped to end its note: 25 - 10 ms


def test_velocity_changes_are_copied_before_the_note():
    passage = [VEL + 20, ON + 60, shift(30), OFF + 60, VEL + 25, ON + 62, shift(30), OFF + 62]
    passage += [VEL + 20, ON + 64, shift(30), OFF + 64, VEL + 25, ON + 65, shift(30), OFF + 65]
    heard = passage * 2 + passage[:3]  # ... VEL 20, ON 60, shift 30: the next is louder
    token, _ = proposal(heard, GATE4)
    assert token == VEL + 25
    token, _ = proposal(heard + [VEL + 25], GATE4)
    assert token == ON + 62  # right after a VELOCITY, the note


def test_a_chord_spread_over_a_few_steps_is_one_onset():
    chord = [ON + 48, shift(CHORD_STEPS - 1), ON + 55, shift(30), OFF + 48, OFF + 55]
    tune = [ON + 60, shift(30), OFF + 60, ON + 62, shift(30), OFF + 62]
    heard = (chord + tune) * 2 + [ON + 48]  # the chord's first note: its second comes "now"
    token, _ = proposal(heard, GATE4)
    assert token == ON + 55


def test_waiting_longer_than_the_passage_did_ends_the_match():
    heard = phrase(60) * 2 + phrase(60)[:2]  # ON 60 just struck
    assert proposal(heard, GATE4)[1] > 0
    late = heard + [shift(60)]  # 600 ms: the phrase's next note came at 250
    assert proposal(late, GATE4) == (0, 0.0)


def test_nothing_matches_across_an_eos():
    heard = phrase(60) * 2 + [EOS] + phrase(60)[:2]
    assert proposal(heard, dataclasses.replace(NOTE_GATE, min_match=3))[1] == 0.0


def test_gap_buckets_are_a_ratio_of_1_2():
    assert gap_key(100) == gap_key(105)
    assert gap_key(100) != gap_key(125)


def test_mix_keeps_the_models_note_offs_and_sums_to_one():
    heard = phrase(60) * 3 + phrase(60)[:2]
    cache = NoteCache(np.array([heard, [shift(7)] * len(heard)]), gate=GATE4)  # row 1: no notes, no match
    torch.manual_seed(0)
    logits = torch.randn(2, V.VOCAB_SIZE)
    mixed = cache.mix(logits)
    p, m = logits.softmax(-1), mixed.exp()
    off = slice(V.NOTE_OFF_OFFSET, V.NOTE_OFF_OFFSET + 128)
    assert torch.allclose(m[0, off], p[0, off], atol=1e-6)
    assert m[0].sum().item() == pytest.approx(1.0, abs=1e-5)
    q, lam = cache.distribution()
    on = slice(0, V.NOTE_OFF_OFFSET)
    expected = (1 - lam[0]) * p[0, on] + lam[0] * (1 - p[0, off].sum()) * torch.as_tensor(q[0, on]).float()
    assert torch.allclose(m[0, on], expected, atol=1e-6)
    assert torch.equal(mixed[1], logits[1])  # no match: the model alone


def test_on_a_real_rag_the_proposals_are_mostly_right():
    """Teacher-forced on the Maple Leaf Rag (it repeats its strains): where the cache proposes
    something, its first choice is the piece's next token (NOTE_OFFs aside) 98% of the time."""
    ids = PerformanceTokenizer().encode(piano_corpus() / "maple-leaf-rag.mid")[:1500]
    cache = NoteCache(np.array([ids[:1]]))
    proposed = right = 0
    for token in ids[1:].tolist():
        if V.TYPE_OF_ID[token] != V.EventType.NOTE_OFF:
            q, _ = cache.distribution()
            if q[0].any():
                proposed += 1
                right += int(q[0].argmax() == token)
        cache.append([token])
    assert proposed > 400
    assert right / proposed > 0.95


def test_a_model_without_an_opinion_continues_the_repeated_phrase():
    """Zero logits: the continuation is the cache's argmax under the grammar: the phrase again,
    note for note and on time; without the cache the onsets are nothing like it."""
    model = GPT(GPTConfig(vocab_size=V.VOCAB_SIZE, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
    tokenizer = PerformanceTokenizer()
    prompt = np.array(phrase(60) * 4, np.int64)
    greedy = SamplingConfig(temperature=0.0, prompt_cache=1.0)
    out = continue_piano(model, tokenizer, prompt, 2.0, sampling=greedy, seed=0)
    notes = tokenizer.decode_notes(out.samples[0])
    assert notes.pitch.tolist() == [60, 64, 67, 72, 60, 64, 67]
    assert np.round(notes.start, 2).tolist() == [0.0, 0.25, 0.5, 1.0, 1.25, 1.5, 1.75]
    plain = continue_piano(model, tokenizer, prompt, 2.0, sampling=SamplingConfig(temperature=0.0), seed=0)
    assert tokenizer.decode_notes(plain.samples[0]).pitch.tolist() != notes.pitch.tolist()
