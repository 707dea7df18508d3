"""The generation grammar of the performance vocabulary: a LogitsMask that keeps samples well formed.

`PerformanceTokenizer.grammar(batch_size)` builds one with the tokenizer's limits; the sampler
(`musicgpt.generation`) calls it through the `LogitsMask` interface and knows nothing of music.
"""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.vocab import EventType

# a shift shorter than 1 s ends a gap (the encoder writes 100, ..., then the rest): no shift follows it
_IS_SHORT_SHIFT = (V.STEPS_OF_ID > 0) & (V.STEPS_OF_ID < V.MAX_SHIFT_STEPS)

# `onset_bias`: gaps between onsets are counted up to this many steps (longer ones in the last
# bin), a row's hazard is read only once it has heard this many gaps, and a gap of g steps counts
# as g +- max(1, ONSET_TOLERANCE * g) (a pianist's "same" gap varies by a few percent)
MAX_GAP_STEPS = 400
MIN_GAPS_HEARD = 8
ONSET_TOLERANCE = 0.05
# the hazard's prior: ONSET_PRIOR_WEIGHT pseudo-gaps at ONSET_PRIOR_HAZARD per step
ONSET_PRIOR_WEIGHT, ONSET_PRIOR_HAZARD = 1.0, 0.05
# the tokens that strike a note (a VELOCITY comes only before a NOTE_ON)
IS_ONSET_TOKEN = (V.TYPE_OF_ID == EventType.NOTE_ON) | (V.TYPE_OF_ID == EventType.VELOCITY)
# An infilled middle must leave sounding the notes the suffix holds on at least this long (100 ms):
# a note the suffix ends sooner is the middle's choice, for one it had to strike in the last
# steps would be a blip (docs/tokenizer.md, "Infilling")
MUST_SOUND_STEPS = 10


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


# Where a row is in a fill-in-the-middle sequence (docs/tokenizer.md, "Infilling"):
# prefix, FIM_SUFFIX, the gap as TIME_SHIFTs, the suffix, FIM_MIDDLE, the middle, FIM_END.
PLAIN, GAP, SUFFIX, MIDDLE = 0, 1, 2, 3


class PerformanceGrammar:
    """A LogitsMask keeping generated performances well formed, batch-wise in numpy.

    After `advance`, for each row the next token may be:
    * NOTE_ON of a pitch not sounding (one voice per pitch, as the encoder), while fewer than
      `max_polyphony` notes sound;
    * NOTE_OFF of a sounding pitch, but not at the step where a NOTE_ON already came (the
      encoder puts offs first; this also rules out zero-length notes), except, in rows marked
      `release_after_onsets`, of the notes struck at an earlier step;
    * TIME_SHIFT, not right after a shift shorter than 1 s (the encoder writes 100, ..., rest),
      and no longer than lets every sounding note stay within `max_note_steps`;
    * VELOCITY of a bin other than the current one, and then only a NOTE_ON may follow;
    * EOS when no note sounds (and not right after VELOCITY); it resets the row's state;
    * never PAD, and never a FIM token outside a fill-in-the-middle prompt.
    In a fill-in-the-middle sequence (see `advance_infill` below and docs/tokenizer.md) the tokens
    after FIM_SUFFIX only record the gap and what the suffix expects; after FIM_MIDDLE the row
    goes on from the prefix's state under an exact deadline: no TIME_SHIFT past the gap's end;
    the shift that reaches it only once every note the suffix holds on (`MUST_SOUND_STEPS` or
    longer) is sounding; there, only NOTE_OFFs of the notes the suffix does not end, then
    FIM_END, once every note sounding is one the suffix ends (no EOS before).
    When a note has sounded for `max_note_steps`, or (with `max_note_tokens`) its NOTE_ON lies that
    many tokens back, only NOTE_OFFs of such overdue notes are allowed. The second rule is for
    notes the model cannot see: it reads a window of the last tokens, and a note struck before
    the window began sounds on with nothing in view to end it; the grammar ends it instead. Some token is always allowed. In the prompt, tokens the grammar would forbid are
    taken as they come (a NOTE_OFF with nothing open changes nothing). About 10-20 us a step
    for batch 8: per-row state lives in (batch, 128) arrays, nothing loops over the vocabulary.
    """

    # token -> its event type: the sampler keeps each type's probability mass under this mask
    # (`musicgpt.generation.sampling.mask_per_group`), so forbidding the NOTE_OFFs of silent
    # pitches does not hand their mass to NOTE_ON and TIME_SHIFT
    group_of_id = V.TYPE_OF_ID.astype(np.int64)
    # token -> what the sampler's prompt cache compares to find a repeat (velocity and small
    # timing differences ignored; see `vocab.MATCH_KEY_OF_ID`)
    match_key_of_id = V.MATCH_KEY_OF_ID
    _SHIFT_STEPS = np.arange(1, V.MAX_SHIFT_STEPS + 1)
    _BINS = np.arange(1, V.NUM_VELOCITY_BINS + 1)
    _NEVER = np.iinfo(np.int64).max // 2  # the deadline of a pitch that is not sounding

    def __init__(
        self, batch_size: int, max_note_steps: int, max_polyphony: int, max_note_tokens: int | None = None
    ):
        if max_note_tokens is not None and max_note_tokens < 1:
            raise ValueError(f"max_note_tokens must be >= 1 or None, got {max_note_tokens!r}")
        self.batch_size = batch_size
        self.max_note_steps = max_note_steps
        self.max_polyphony = max_polyphony
        self.max_note_tokens = max_note_tokens
        self._rows = np.arange(batch_size)
        b = batch_size
        self.sounding = np.zeros((b, 128), bool)
        self.deadline = np.full((b, 128), self._NEVER, np.int64)  # step by which a sounding note must end
        self.n_sounding = np.zeros(b, np.int64)
        self.clock = np.zeros(b, np.int64)  # steps since the start (or the last EOS)
        self.n_tokens = 0  # tokens seen (prompt and generated), the same for every row
        self.on_token = np.zeros((b, 128), np.int64)  # n_tokens at each sounding note's NOTE_ON
        self.velocity_bin = np.zeros(b, np.int64)  # 0: none yet
        self.after_velocity = np.zeros(b, bool)
        self.on_this_step = np.zeros(b, bool)
        self.after_short_shift = np.zeros(b, bool)
        # how long the row's notes have lasted, in steps (prompt and generated): `release_bias` reads it
        self.lengths_heard = np.zeros((b, max_note_steps + 1), np.int64)
        # the gaps between the row's distinct onsets, in steps, and its last onset's clock (-1:
        # none yet): `onset_bias` reads them
        self.gaps_heard = np.zeros((b, MAX_GAP_STEPS + 1), np.int64)
        self.last_onset = np.full(b, -1, np.int64)
        # fill in the middle: the row's place (PLAIN, GAP, SUFFIX, MIDDLE), the gap's length, the
        # clock at which the middle must end, and the suffix's pitches: seen, and ended before struck
        self.fim = np.zeros(b, np.int8)
        # rows whose notes struck at earlier steps may end right after this step's NOTE_ONs (see
        # `allowed`); set by the sampler where a snapped grid took away the short shifts between
        self.release_after_onsets = np.zeros(b, bool)
        self.gap = np.zeros(b, np.int64)
        self.end_clock = np.zeros(b, np.int64)
        self.suffix_seen = np.zeros((b, 128), bool)
        self.expected = np.zeros((b, 128), bool)  # ended by the suffix: may sound when the middle ends
        # of those, the ones the suffix holds MUST_SOUND_STEPS or longer: must sound then
        self.must_sound = np.zeros((b, 128), bool)
        self.suffix_clock = np.zeros(b, np.int64)  # steps into the suffix read so far

    def _reset(self, rows: np.ndarray) -> None:
        self.sounding[rows] = False
        self.deadline[rows] = self._NEVER
        self.lengths_heard[rows] = 0
        self.gaps_heard[rows] = 0
        self.last_onset[rows] = -1
        for state in (
            self.n_sounding,
            self.clock,
            self.velocity_bin,
            self.after_velocity,
            self.on_this_step,
            self.after_short_shift,
            self.fim,
            self.gap,
            self.end_clock,
        ):
            state[rows] = 0
        self.suffix_seen[rows] = False
        self.expected[rows] = False
        self.must_sound[rows] = False
        self.suffix_clock[rows] = 0

    def start(self, prompt: np.ndarray) -> None:
        prompt = np.asarray(prompt)
        if prompt.ndim != 2 or prompt.shape[0] != self.batch_size:
            raise ValueError(f"prompt must be (batch={self.batch_size}, T), got shape {prompt.shape}")
        V.check_ids(prompt.reshape(-1))
        self._reset(self._rows)
        self.n_tokens = 0
        for t in range(prompt.shape[1]):
            self.advance(prompt[:, t])

    def allowed(self) -> np.ndarray:
        mask = np.empty((self.batch_size, V.VOCAB_SIZE), bool)
        sounding, after_velocity = self.sounding, self.after_velocity
        next_deadline = self.deadline.min(1)
        overdue = self.clock >= next_deadline
        out_of_view = None
        if self.max_note_tokens is not None:
            out_of_view = sounding & (self.on_token <= self.n_tokens - self.max_note_tokens)
            overdue = overdue | out_of_view.any(1)
        crowded = self.n_sounding >= self.max_polyphony

        can_on = ~(overdue | (crowded & ~after_velocity))
        np.greater(can_on[:, None], sounding, out=mask[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128])
        can_off = ~(self.on_this_step | after_velocity)
        offs = mask[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
        np.logical_and(sounding, can_off[:, None], out=offs)
        late = self.on_this_step & ~after_velocity & self.release_after_onsets & (self.fim == PLAIN)
        if late.any():  # after this step's NOTE_ONs, the notes struck before it (not zero-length ones)
            offs[late] = sounding[late] & (self.ages()[late] > 0)
        if overdue.any():
            due = sounding[overdue] & (self.deadline[overdue] <= self.clock[overdue, None])
            if out_of_view is not None:
                due |= out_of_view[overdue]
            offs[overdue] = due
        longest = np.where(overdue | after_velocity | self.after_short_shift, 0, next_deadline - self.clock)
        np.less_equal(
            self._SHIFT_STEPS, longest[:, None], out=mask[:, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET]
        )
        velocities = mask[:, V.VELOCITY_OFFSET : V.EOS_ID]
        np.not_equal(self._BINS, self.velocity_bin[:, None], out=velocities)
        velocities &= ~(overdue | after_velocity | crowded)[:, None]
        mask[:, V.EOS_ID] = (self.n_sounding == 0) & ~after_velocity
        mask[:, V.PAD_ID :] = False  # PAD and the FIM tokens
        if self.fim.any():
            self._mask_infill(mask)
        return mask

    def _mask_infill(self, mask: np.ndarray) -> None:
        """The exact-time rules of rows inside a fill-in-the-middle sequence (PLAIN rows untouched)."""
        reading = (self.fim == GAP) | (self.fim == SUFFIX)
        if reading.any():  # the prompt's gap and suffix: never sampled, any event may come
            mask[reading, : V.EOS_ID] = True
            mask[reading, V.EOS_ID :] = False
            mask[reading, V.FIM_MIDDLE_ID] = True
        rows = np.flatnonzero(self.fim == MIDDLE)
        if rows.size == 0:
            return
        m = mask[rows]
        sounding, expected = self.sounding[rows], self.expected[rows]
        remaining = self.end_clock[rows] - self.clock[rows]  # >= 0: no shift goes past the end
        at_end = remaining <= 0
        missing = self.must_sound[rows] & ~sounding
        complete = ~missing.any(1)  # every note the suffix holds on is sounding
        ons = m[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128]
        # a note the suffix ends may be struck however many notes sound (else a full row could not
        # finish), but not where a due note must end first
        overdue = self.clock[rows] >= self.deadline[rows].min(1)
        ons |= missing & ~overdue[:, None]
        ons[at_end] = False  # at the end only NOTE_OFFs: a note struck there would last no time
        # one step before it, a row still missing one cannot move time: it may strike only the
        # missing ones (else it strikes pitches at random until it hits one, each lasting 10 ms)
        stuck = (remaining == 1) & ~complete
        ons[stuck] &= missing[stuck]
        shifts = m[:, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET]
        shifts &= self._SHIFT_STEPS <= remaining[:, None]
        # the shift that reaches the end only once the notes the suffix holds on all sound
        shifts[~complete] &= self._SHIFT_STEPS < remaining[~complete, None]
        m[at_end, V.VELOCITY_OFFSET : V.EOS_ID] = False
        # at the end: end the notes the suffix does not end, never those it does (their deadline
        # included: the suffix ends them), then FIM_END once only those sound, those it holds on
        # all among them. One it ends within MUST_SOUND_STEPS is the middle's choice: where the
        # middle left it silent, the suffix's NOTE_OFF ends nothing (docs/tokenizer.md, "Infilling")
        offs = m[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
        offs[at_end] = (sounding & ~expected)[at_end]
        m[:, V.EOS_ID] = False
        m[:, V.FIM_END_ID] = at_end & complete & ~(sounding & ~expected).any(1) & ~self.after_velocity[rows]
        mask[rows] = m

    def steps_to_middle_end(self) -> np.ndarray:
        """(batch,) steps left before the end of the middle a row is writing; 0 outside a middle."""
        return np.where(self.fim == MIDDLE, self.end_clock - self.clock, 0)

    def ages(self) -> np.ndarray:
        """(batch, 128) steps since each sounding note's NOTE_ON (meaningless where none sounds)."""
        return self.clock[:, None] - (self.deadline - self.max_note_steps)

    def spread(self) -> np.ndarray:
        """(batch, vocab) where the sampler hands the mass the mask forbids (`SamplingConfig.mask_mode`
        "spread"): within NOTE_OFF, to each sounding note in proportion to how long it has sounded
        (a model that wants to end a note that is not sounding has lost track of which notes are,
        and the ones it loses are those struck longest ago); -1 elsewhere (in proportion to the model)."""
        out = np.full((self.batch_size, V.VOCAB_SIZE), -1.0, np.float32)
        age = self.ages() + 1  # >= 1
        out[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128] = np.where(self.sounding, age, 0)
        return out

    def release_bias(self, strength: float) -> np.ndarray:
        """(batch, vocab) log-factors for the sampler: the piece's own note lengths as a prior on
        which sounding note ends (a product of experts with the model, `strength` its weight).

        With n notes heard so far (prompt and sample), n(<= a) of them no longer than a, the
        NOTE_OFF of a sounding note of age a gets log(1 + strength * n(<= a) / (n - n(<= a) + 1)):
        the odds that a note of this piece would be over by now. A note younger than every note
        heard is left to the model; one older than all of them is pressed hard. 0 everywhere else,
        and for a row that has heard no note end.

        (Holding back TIME_SHIFTs that would carry a note past the piece's note lengths, the other
        half of such a prior, was tried and made things far worse: the model, kept from moving
        time, struck 120 notes a second.)
        """
        out = np.zeros((self.batch_size, V.VOCAB_SIZE), np.float32)
        heard = self.lengths_heard.sum(1)
        if strength <= 0 or not heard.any():
            return out
        at_most = np.cumsum(self.lengths_heard, axis=1)  # (B, steps + 1): n(<= a)
        age = np.clip(self.ages(), 0, self.max_note_steps)
        over = np.take_along_axis(at_most, age, axis=1)  # (B, 128)
        odds = over / (heard[:, None] - over + 1.0)
        sounding = self.sounding & (heard > 0)[:, None]
        out[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128] = np.log1p(strength * odds) * sounding
        return out

    def onset_bias(self, strength: float) -> np.ndarray:
        """(batch, vocab) log-factors for the sampler: the piece's own gaps between onsets as a
        prior on when the next note is struck (a product of experts with the model on "a note
        now or not", `strength` its weight).

        With e steps since the row's last onset, and the gaps heard so far (prompt and sample), the
        piece's hazard is h(e) = (gaps of about e steps, per step) / (gaps of e steps or more), each
        with a small prior (ONSET_PRIOR_*), and its mean rate r = gaps / their total length;
        NOTE_ON and VELOCITY get strength * (logit h(e) - logit r). A piece
        whose notes fall on a grid (a sequenced MIDI file: every gap 15 or 30 steps) makes a note
        between the grid's points unlikely and one on them likely; a performance's spread gaps
        give a gentle tilt. 0 at e = 0 (a chord's notes), and for a row that has heard fewer than
        MIN_GAPS_HEARD gaps.

        Not on by default (`PianoPriors.onset` = 0): at strength 1 it brought the onset OA of the
        held-out continuations from 0.48 to 0.55 but thinned them (7.6 -> 6.1 notes/s, the real
        9.9): a note kept from an off-grid moment often waits for a later grid point. Tried and
        dropped: the same tilt on TIME_SHIFTs by where they would land the next note, and only its
        positive half (docs/model.md, "Onsets").
        """
        out = np.zeros((self.batch_size, V.VOCAB_SIZE), np.float32)
        elapsed = self.clock - self.last_onset
        rows = np.flatnonzero((self.last_onset >= 0) & (self.gaps_heard.sum(1) >= MIN_GAPS_HEARD))
        if strength <= 0 or rows.size == 0:
            return out
        e = elapsed[rows]
        struck = e > 0  # at e = 0 a note joins the chord just struck: no prior
        onsets = np.flatnonzero(IS_ONSET_TOKEN)
        tilt = self._gap_tilt(rows, e[:, None])[:, 0]
        out[rows[struck][:, None], onsets[None, :]] = (strength * tilt[struck])[:, None]
        return out

    def _gap_tilt(self, rows: np.ndarray, e: np.ndarray) -> np.ndarray:
        """(R, K) logit h(e) - logit r of `onset_bias`, for rows `rows` at elapsed steps e (R, K)."""
        e = np.minimum(e, MAX_GAP_STEPS)
        width = np.maximum(1, np.rint(ONSET_TOLERANCE * e)).astype(np.int64)
        below = np.cumsum(self.gaps_heard[rows], axis=1)  # below[:, g]: gaps of at most g steps
        total = below[:, -1:]

        def at_most(g):
            return np.take_along_axis(below, np.clip(g, 0, MAX_GAP_STEPS), axis=1)

        near = (at_most(e + width) - at_most(e - width - 1)) / (2 * width + 1)  # per step
        left = total - at_most(e - 1)  # gaps of e steps or more
        hazard = (near + ONSET_PRIOR_WEIGHT * ONSET_PRIOR_HAZARD) / (left + ONSET_PRIOR_WEIGHT)
        # against the piece's mean rate, one onset per mean gap (a memoryless player of the same
        # density): the tilt moves notes to the piece's gaps and leaves how many there are alone
        length = (self.gaps_heard[rows] * np.arange(MAX_GAP_STEPS + 1)).sum(1, keepdims=True)
        mean_rate = total / np.maximum(length, 1)
        return _logit(np.clip(hazard, 1e-4, 0.9)) - _logit(np.clip(mean_rate, 1e-4, 0.9))

    def advance(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens).reshape(-1)
        kind = V.TYPE_OF_ID[tokens]
        value = V.VALUE_OF_ID[tokens]
        # rows reading the prompt's gap and suffix keep the prefix's state as it was at FIM_SUFFIX
        # (the middle goes on from it); what they read goes to `_read_suffix`
        reading = (self.fim == GAP) | (self.fim == SUFFIX)
        if reading.any():
            self._read_suffix(reading, tokens, kind, value)
            tokens = np.where(reading, V.PAD_ID, tokens)  # PAD: changes nothing below
            kind, value = V.TYPE_OF_ID[tokens], V.VALUE_OF_ID[tokens]
        notes = kind <= EventType.NOTE_OFF
        if notes.any():
            on = kind == EventType.NOTE_ON
            r, p = self._rows[notes], value[notes]
            was = self.sounding[r, p]
            now = on[notes]
            ended = was & ~now
            if ended.any():  # a note's length, for `spread`
                length = self.clock[r[ended]] - (self.deadline[r[ended], p[ended]] - self.max_note_steps)
                np.add.at(self.lengths_heard, (r[ended], np.clip(length, 0, self.max_note_steps)), 1)
            self.n_sounding[r] += now.astype(np.int64) - was
            self.sounding[r, p] = now
            # a NOTE_ON of a sounding pitch (prompts only) restarts its clock; a stray NOTE_OFF changes nothing
            self.deadline[r, p] = np.where(now, self.clock[r] + self.max_note_steps, self._NEVER)
            self.on_token[r, p] = self.n_tokens
            self.on_this_step |= on
            struck = self._rows[on & (self.clock > self.last_onset)]  # a new onset time (not a chord's)
            if struck.size:
                gap = self.clock[struck] - self.last_onset[struck]
                heard = self.last_onset[struck] >= 0
                np.add.at(self.gaps_heard, (struck[heard], np.minimum(gap[heard], MAX_GAP_STEPS)), 1)
                self.last_onset[struck] = self.clock[struck]
        shift = V.STEPS_OF_ID[tokens]
        self.clock += shift
        self.on_this_step &= shift == 0
        self.after_velocity = np.where(reading, self.after_velocity, kind == EventType.VELOCITY)
        self.velocity_bin = np.where(kind == EventType.VELOCITY, value, self.velocity_bin)
        self.after_short_shift = np.where(reading, self.after_short_shift, _IS_SHORT_SHIFT[tokens])
        self.n_tokens += 1
        ends = (tokens == V.EOS_ID) | (tokens == V.FIM_END_ID)  # FIM_END: the infilled piece is whole
        if ends.any():
            self._reset(ends)
        starts = (tokens == V.FIM_SUFFIX_ID) & (self.fim == PLAIN)
        if starts.any():
            self.fim[starts] = GAP
            self.gap[starts] = 0
            self.suffix_seen[starts] = self.expected[starts] = self.must_sound[starts] = False
            self.suffix_clock[starts] = 0

    def _read_suffix(self, rows: np.ndarray, tokens: np.ndarray, kind: np.ndarray, value: np.ndarray) -> None:
        """Rows after FIM_SUFFIX: TIME_SHIFTs first add up the gap; then the suffix's notes say which
        pitches must sound when the middle ends (those whose first event there is a NOTE_OFF)."""
        shift = V.STEPS_OF_ID[tokens]
        in_gap = rows & (self.fim == GAP)
        self.gap += np.where(in_gap & (shift > 0), shift, 0)
        self.fim[in_gap & (shift == 0)] = SUFFIX
        in_suffix = rows & (self.fim == SUFFIX)
        self.suffix_clock += np.where(in_suffix, shift, 0)
        note = in_suffix & (kind <= EventType.NOTE_OFF)
        if note.any():
            r, p = np.flatnonzero(note), value[note]
            first = ~self.suffix_seen[r, p]
            ended = kind[note][first] == EventType.NOTE_OFF
            self.expected[r[first], p[first]] = ended
            self.must_sound[r[first], p[first]] = ended & (self.suffix_clock[r[first]] >= MUST_SOUND_STEPS)
            self.suffix_seen[r, p] = True
        middle = rows & (tokens == V.FIM_MIDDLE_ID)
        if middle.any():
            self.fim[middle] = MIDDLE
            self.end_clock[middle] = self.clock[middle] + self.gap[middle]
            # the prefix may end on part of a shift (a span starts anywhere): the middle may go on with one
            self.after_short_shift[middle] = False
