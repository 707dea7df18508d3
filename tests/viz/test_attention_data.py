"""Attention as data: causal probabilities, the token -> note map, excerpts, compaction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.notes import Notes
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.vocab import name_to_id
from musicgpt.viz.attention import (
    AttentionData,
    ExcerptError,
    attention_probs,
    compact,
    excerpt_slice,
    note_attention,
    strongest_keys,
    token_note_map,
)

TOK = PerformanceTokenizer()
MAESTRO = PIANO_DIR / "Maestro_4.mid"


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("music-tiny")).eval()


@pytest.fixture(scope="module")
def piano_ids() -> np.ndarray:
    return TOK.encode(MAESTRO).astype(np.int64)


def ids_of(*names: str) -> np.ndarray:
    return np.array([name_to_id(n) for n in names], dtype=np.int64)


# --- probabilities ---------------------------------------------------------------------------------


def test_probabilities_are_causal_and_rows_sum_to_one(model, piano_ids):
    a = attention_probs(model, piano_ids[:200])
    assert a.shape == (2, 2, 200, 200) and a.dtype == np.float32
    assert np.all(a[..., np.triu_indices(200, 1)[0], np.triu_indices(200, 1)[1]] == 0.0)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    assert np.all(a[..., 0, 0] == 1.0)  # the first token can only look at itself
    # not uniform: a random model still weighs keys differently
    assert a[1, 0, 199].std() > 0


def test_probabilities_too_long_for_the_context(model, piano_ids):
    with pytest.raises(ExcerptError, match="256"):
        attention_probs(model, piano_ids[:257])


# --- tokens -> notes, on hand-made sequences ----------------------------------------------------------


def test_map_two_overlapping_notes():
    ids = ids_of(
        "VELOCITY_20",
        "NOTE_ON_60",
        "TIME_SHIFT_50",
        "NOTE_ON_64",
        "TIME_SHIFT_10",
        "NOTE_OFF_60",
        "NOTE_OFF_64",
    )
    m = token_note_map(TOK.decode_notes(ids), len(ids))
    assert m.note_of_on.tolist() == [-1, 0, -1, 1, -1, -1, -1]
    assert m.note_of_off.tolist() == [-1, -1, -1, -1, -1, 0, 1]
    assert m.on_token.tolist() == [1, 3] and m.off_token.tolist() == [5, 6]


def test_map_same_pitch_struck_twice_pairs_first_in_first_out():
    ids = ids_of(
        "NOTE_ON_60",
        "TIME_SHIFT_10",
        "NOTE_ON_60",
        "TIME_SHIFT_10",
        "NOTE_OFF_60",
        "TIME_SHIFT_10",
        "NOTE_OFF_60",
    )
    m = token_note_map(TOK.decode_notes(ids), len(ids))
    assert m.note_of_on.tolist() == [0, -1, 1, -1, -1, -1, -1]
    assert m.note_of_off.tolist() == [-1, -1, -1, -1, 0, -1, 1]


def test_map_open_note_and_stray_note_off():
    ids = ids_of("NOTE_OFF_62", "NOTE_ON_60", "TIME_SHIFT_100", "EOS")
    m = token_note_map(TOK.decode_notes(ids), len(ids))
    assert m.note_of_on.tolist() == [-1, 0, -1, -1]
    assert m.note_of_off.tolist() == [-1, -1, -1, -1]  # the stray NOTE_OFF ends nothing
    assert m.off_token.tolist() == [-1]  # closed at the end


def test_map_rejects_notes_that_do_not_fit():
    notes = Notes(
        *(np.zeros(2, int) for _ in range(4)), on_token=np.array([1, 1]), off_token=np.array([-1, -1])
    )
    with pytest.raises(ValueError, match="share"):
        token_note_map(notes, 4)
    bad = Notes(*(np.zeros(1, int) for _ in range(4)), on_token=np.array([3]), off_token=np.array([2]))
    with pytest.raises(ValueError, match="NOTE_OFF"):
        token_note_map(bad, 4)
    with pytest.raises(ValueError, match="NOTE_ON"):
        token_note_map(bad, 3)


def test_note_attention_is_the_note_on_rows_and_columns(model):
    ids = ids_of(
        "VELOCITY_20",
        "NOTE_ON_60",
        "TIME_SHIFT_50",
        "NOTE_ON_64",
        "NOTE_ON_67",
        "TIME_SHIFT_10",
        "NOTE_OFF_60",
    )
    a = attention_probs(model, ids)
    m = token_note_map(TOK.decode_notes(ids), len(ids))
    n = note_attention(a, m)
    assert n.shape == (2, 2, 3, 3)
    for i, ti in enumerate([1, 3, 4]):
        for j, tj in enumerate([1, 3, 4]):
            assert np.array_equal(n[..., i, j], a[..., ti, tj])
    assert np.all(np.triu(n[0, 0], 1) == 0)  # still causal between notes


# --- excerpts --------------------------------------------------------------------------------------


def test_excerpt_slice_by_seconds():
    times = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 1.5, 2.0])
    assert excerpt_slice(times) == slice(0, 7)
    assert excerpt_slice(times, 0.5, 1.0) == slice(2, 5)
    assert excerpt_slice(times, 1.0) == slice(3, 7)
    assert excerpt_slice(times, None, 1.0) == slice(0, 3)
    with pytest.raises(ExcerptError, match="no tokens from 3 s"):
        excerpt_slice(times, 3.0, 1.0)
    with pytest.raises(ExcerptError, match="positive"):
        excerpt_slice(times, 0.0, 0.0)


def test_from_music_keeps_exactly_the_notes_started_in_the_excerpt(model, piano_ids):
    data = AttentionData.from_music(model, piano_ids, TOK, start=20.0, seconds=3.0)
    whole = TOK.decode_notes(piano_ids)
    inside = (whole.start >= 20.0 - 1e-9) & (whole.start < 23.0 - 1e-9)
    assert data.n_tokens < model.config.block_size  # the window was not cut
    assert len(data.notes) == inside.sum() > 5
    np.testing.assert_array_equal(data.notes.pitch, whole.pitch[inside])
    np.testing.assert_array_equal(data.notes.velocity, whole.velocity[inside])  # the piece's, not a restart's
    np.testing.assert_array_equal(data.notes.on_token + data.first_token, whole.on_token[inside])
    assert data.token_times[0] >= 20.0 and data.token_times[-1] < 23.0
    ids = data.token_ids
    assert all(data.token_names[t].startswith("NOTE_ON_") for t in data.notes.on_token)
    assert all(ids[t] == data.notes.pitch[i] for i, t in enumerate(data.notes.on_token))  # NOTE_ON id = pitch
    off = data.notes.off_token
    assert all(data.token_names[t] == f"NOTE_OFF_{data.notes.pitch[i]}" for i, t in enumerate(off) if t >= 0)


def test_from_music_cuts_a_long_excerpt_to_the_context(model, piano_ids):
    data = AttentionData.from_music(model, piano_ids, TOK, start=30.0)
    assert data.n_tokens == 256 and data.attention.shape == (2, 2, 256, 256)
    assert data.note_attention().shape[-1] == len(data.notes)
    share = data.note_share()
    assert np.all((share > 0) & (share <= 1 + 1e-6))


# --- compaction ------------------------------------------------------------------------------------


def test_compact_keeps_the_top_weights_exactly(model, piano_ids):
    a = attention_probs(model, piano_ids[:240])
    for precision in ("uint8", "float16"):
        c = compact(a, 12, precision)
        assert c.index.shape == (2, 2, 240, 12) and c.index.dtype == np.uint16
        kept = np.take_along_axis(a, c.index.astype(np.int64), axis=-1)
        expected = -np.sort(-a, axis=-1)[..., :12]
        np.testing.assert_array_equal(kept, expected)  # exactly the k largest, strongest first
        w = c.weights()
        tol = (
            a.max(-1, keepdims=True) / 510 + 1e-7
            if precision == "uint8"
            else np.abs(expected) * 2**-11 + 1e-8
        )
        assert np.all(np.abs(w - expected) <= tol)
        dense = c.dense()
        assert dense.shape == a.shape and np.all((dense[..., 100:, :] > 0).sum(-1) == 12)
        np.testing.assert_array_equal(np.take_along_axis(dense, c.index.astype(np.int64), axis=-1), w)
    c = compact(a, 12)
    np.testing.assert_array_equal(c.weights()[..., 0], a.max(-1))  # a row's strongest weight is exact


def test_compact_short_rows_keep_everything():
    a = np.tril(np.random.default_rng(0).random((5, 5))).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    c = compact(a, 8, "float16")  # k > n: all of each row
    assert c.k == 5
    np.testing.assert_allclose(c.dense(), a, rtol=1e-3)
    assert c.index[0].tolist()[0] == 0  # row 0: key 0 first, then the zero-weight padding
    np.testing.assert_array_equal(c.weights()[0, 1:], 0)


def test_compact_of_a_2048_token_excerpt_is_small():
    torch.manual_seed(0)
    big = GPT(GPTConfig.preset("music-tiny", block_size=2048)).eval()
    ids = TOK.encode(PIANO_DIR / "Maestro_5.mid").astype(np.int64)[:2048]
    a = attention_probs(big, ids)
    c = compact(a, 16)
    stored = c.index.nbytes + c.weight.nbytes + c.scale.nbytes
    assert stored == 2 * 2 * 2048 * (16 * 3 + 4)  # uint16 index + uint8 weight per key, float32 scale per row
    assert stored < a.nbytes / 150


def test_strongest_keys_leaves_out_the_query_and_weak_keys():
    w = np.array([[0.1, 0.5, 0.0, 0.4], [0.3, 0.3, 0.2, 0.2]])
    assert strongest_keys(w, 3, per_head=2) == [(0, 1, 0.5), (1, 0, 0.3), (1, 1, 0.3), (0, 0, 0.1)]
    assert strongest_keys(w, 1, heads=[1], per_head=5, threshold=0.25) == [(1, 0, 0.3)]
