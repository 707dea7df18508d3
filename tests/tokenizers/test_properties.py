"""Property tests: random notes round trip; random ids always decode; grammar-sampled ids are clean."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from perf_reference import RefNote, decoded_as_tuples, quantize

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

times = st.floats(0.0, 30.0, allow_nan=False)
# grid-aligned times too, so that ties at x.xx5 s and equal onsets actually happen
grid_times = st.integers(0, 3000).map(lambda k: k / 200)
note = st.tuples(
    st.integers(0, 127),
    st.integers(1, 127),
    st.one_of(times, grid_times),
    st.floats(0.0, 4.0) | st.sampled_from([0.0, 0.005, 0.01]),
)


@FAST
@given(st.lists(note, max_size=60))
def test_random_notes_survive_the_round_trip(notes):
    pitch, velocity, start, duration = (np.array(x) for x in zip(*notes, strict=True)) if notes else ([],) * 4
    end = np.asarray(start, float) + np.asarray(duration, float)
    ids = TOK.encode_notes(pitch, velocity, start, end)
    expected = quantize(
        [
            RefNote(int(p), int(v), float(s), float(e), 0)
            for p, v, s, e in zip(pitch, velocity, start, end, strict=True)
        ]
    )
    assert decoded_as_tuples(TOK.decode_notes(ids)) == expected
    # and the decoded notes encode to the very same ids
    d = TOK.decode_notes(ids)
    assert np.array_equal(TOK.encode_notes(d.pitch, d.velocity, d.start, d.end), ids)


@FAST
@given(st.lists(st.integers(0, V.VOCAB_SIZE - 1), max_size=300))
def test_random_ids_decode_without_raising(ids):
    d = TOK.decode_notes(ids)
    ids = np.array(ids, np.int64)
    assert np.all(d.end > d.start)
    assert np.all(
        (d.end - d.start <= TOK.max_note_seconds + 1e-9) | (d.off_token >= 0)
    )  # open ones are capped
    assert np.array_equal(ids[d.on_token], d.pitch)  # every note starts at a NOTE_ON of its pitch
    closed = d.off_token >= 0
    assert np.array_equal(ids[d.off_token[closed]], d.pitch[closed] + V.NOTE_OFF_OFFSET)
    assert np.all(d.off_token[closed] > d.on_token[closed])
    assert np.unique(d.off_token[closed]).size == closed.sum()  # one NOTE_OFF closes one note
    assert np.all(np.diff(d.on_token) > 0)
    times = TOK.token_times(ids)
    assert np.allclose(d.start, times[d.on_token]) and np.all(np.diff(times) >= 0)
    assert len(TOK.decode(ids).instruments[0].notes) == len(d)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.sampled_from([0.2, 1.0, 10.0]), st.integers(1, 8))
def test_grammar_constrained_sampling_gives_clean_sequences(seed, batch, max_seconds, polyphony):
    tok = PerformanceTokenizer(max_note_seconds=max_seconds, max_polyphony=polyphony)
    rng = np.random.default_rng(seed)
    g = tok.grammar(batch)
    g.start(np.zeros((batch, 0), np.int64))
    out = []
    for _ in range(200):
        m = g.allowed()
        tokens = (rng.random(m.shape) * m).argmax(1)
        out.append(tokens)
        g.advance(tokens)
    for row in np.stack(out, 1):
        d = tok.decode_notes(row)
        n_offs = int(((row >= V.NOTE_OFF_OFFSET) & (row < V.TIME_SHIFT_OFFSET)).sum())
        assert (d.off_token >= 0).sum() == n_offs  # no NOTE_OFF without a sounding note
        closed = d.off_token >= 0
        assert np.all(d.end[closed] - d.start[closed] <= max_seconds + 1e-9)
        assert np.all(d.end > d.start) and V.PAD_ID not in row
