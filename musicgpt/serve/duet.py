"""A live duet: the player plays a phrase, pauses, and the model answers; the session is one piece.

The latency budget (end of the pause -> first note of the answer, 150 ms at p95 on 2 CPU cores)
rules out prefilling the session when the pause ends (1,000 tokens take one to two seconds). So
the player's notes go to the server as they are played, become tokens at once, and are fed to
the model while the player plays (one forward for what arrived since the last); and half way
through the pause the server bets that the pause will end on time and samples the answer's
first note then (speculation). When the pause ends the first note is there; when the bet fails
(the player went on), it is cut back, and at worst the pause's TIME_SHIFT and the answer's
first VELOCITY remain to run before the first NOTE_ON is sampled.

    LiveContext   the KV cache of one session: a growing token list, fed incrementally, that
                  can be cut back (an answer the player interrupts, a pause that did not end)
    DuetSession   the session's music: player events -> tokens, the answer's sampling, the cut,
                  the whole session as MIDI (player and model on two tracks)
    DuetEngine    one thread that runs every session's model work in small pieces, in order
    duet_routes   GET /duet, the WebSocket /duet/ws, the session's MIDI and attention page
                  (serve/duet_socket.py: the web side, which only moves messages)

Every session has its own copy of the model sharing the weights (its own cache, nothing else),
and all of them run on one thread apart from the generation jobs' thread: a 30 s generation job
would otherwise hold up a duet for seconds. Work on that thread comes in bounded pieces (at
most SYNC_STEPS forwards of CHUNK_TOKENS tokens, ANSWER_CHUNK sampled tokens, or one prefill of
the window), so one session's flood of notes delays another by one piece at most.

Times. The page sends its own clock (ms, performance.now()); the session maps it onto the
piece's clock (10 ms steps) through an anchor, moved when an answer starts to play, so that a
note played 300 ms into the answer lands 300 ms after its start in the piece. A silence longer
than MAX_GAP_SECONDS is shortened to that: the model hears a pause, not ten minutes of nothing.

The protocol (JSON text frames, each at most MAX_MESSAGE_BYTES):

    page -> server
      {"type": "notes", "events": [[t_ms, pitch, velocity], ...]}   velocity 0: the note ends
      {"type": "answer", "time": t_ms, "seconds": s, "temperature": x}  the pause ended at t_ms
      {"type": "started", "answer": k, "time": t_ms}   answer k began to sound at t_ms
      {"type": "settings", "pause": ms, "seconds": s, "temperature": x}   for speculation
    server -> page
      {"type": "ready", "session": id, "midi": url, "attention": url, "model": about, "context": n}
      {"type": "on", "answer": k, "pitch": p, "velocity": v, "t": s}   s: seconds into answer k
      {"type": "off", "answer": k, "pitch": p, "t": s}
      {"type": "end", "answer": k, "t": s, "serverMs": ms}    answer k is complete (s: its length)
      {"type": "cut", "answer": k, "t": s}     the player interrupted answer k at s
      {"type": "error", "error": message}      a bad message (dropped; the session goes on)
"""

from __future__ import annotations

import asyncio
import collections
import copy
import io
import itertools
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from musicgpt.errors import MusicGPTError
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.vocab import EventType

_log = logging.getLogger(__name__)

# --- limits ----------------------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 16 * 1024  # a "notes" message of 256 events is ~5 KB
MAX_EVENTS_PER_MESSAGE = 256
MAX_INBOX = 16  # "notes" messages read ahead of the engine's thread (a drain: ~0.5 s at most)
MAX_SESSION_TOKENS = 200_000  # ~30 min of dense playing; the whole piece stays in memory
MAX_ANSWER_SECONDS = 30.0
MAX_GAP_SECONDS = 3.0  # the longest silence the model hears between two events
MAX_LIVE_SESSIONS = 8  # open sockets at once; each holds a KV cache (~19 MB for piano-small)
KEEP_FINISHED = 16  # closed sessions kept for their MIDI and attention page
SYNC_STEPS = 8  # forwards in one piece of work on the engine's thread
CHUNK_TOKENS = 64  # the most pending tokens fed in one forward
ANSWER_CHUNK = 16  # sampled tokens in one piece of work (fewer when a NOTE_ON comes first)
# How far sampling runs ahead of the answer as it plays: what an interruption cuts back. Dense
# piano runs at up to ~300 tokens/s, so half a second stays within the ring's margin.
LOOKAHEAD_SECONDS = 0.5
RING_MARGIN = 512  # relative models: cache slots beyond the context (see LiveContext)
MAX_TOKENS_PER_SECOND = 400  # as musicgpt.generation.piano: a guard on a runaway answer

PLAYER, MODEL = 0, 1


class DuetError(MusicGPTError):
    """A message the session refuses; its text goes back to the page as {"type": "error"}."""


# --- the model's side: an incrementally fed KV cache -------------------------------------------------


def model_sharing_weights(model):
    """A copy of `model` whose parameters and buffers are the same tensors, with no KV cache.

    Each duet session decodes through its own copy: the cache lives on the attention modules,
    so two sessions (or a session and a generation job) on one module would overwrite each other.
    """
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, memo)
    clone.clear_cache()
    clone.eval()
    return clone


class LiveContext:
    """A token sequence that grows (and is sometimes cut back), kept in the model's KV cache.

    `append` adds tokens; `sync` feeds what is pending, in chunks of at most CHUNK_TOKENS per
    forward (a player's event is 1-3 tokens: one forward, about the cost of one decode step);
    `logits()` returns the next token's logits; `truncate(n)` drops everything after the first
    n tokens. The model reads the last `context` tokens. Token i sits at position i - base, base
    moving only when the cache is refilled by a prefill:
    * learned positions: positions 0..context-1; when full, the window's last 3/4 are
      prefilled again at 0.. (as `generate_stream` slides);
    * relative attention: a ring buffer of context + RING_MARGIN slots, positions growing for
      ever. A cut of k tokens leaves their slots stale (masked: they lie in the future) and
      the k oldest keys overwritten; a chunk of T tokens overwrites the T - 1 oldest keys its
      first queries would read. So the model reads at least context + margin - k - T + 1 >=
      context tokens (and exactly the ring's sliding window when nothing was cut and tokens
      come one at a time); a cut of more than RING_MARGIN - CHUNK_TOKENS refills the cache.
    A backlog of `context` tokens or more (a flood of notes) is one prefill of the window.
    """

    def __init__(self, model, context: int):
        from musicgpt.generation.decode import decode_step, prefill

        self._prefill, self._step = prefill, decode_step
        self.model = model
        self.relative = bool(model.config.relative)
        if not self.relative:
            context = min(context, model.config.block_size)
        self.context = context
        self.cache_len = context + RING_MARGIN if self.relative else context
        model.setup_cache(1, self.cache_len)
        self.tokens: list[int] = []
        self.base = 0
        self.n_fed = 0  # tokens whose keys are in the cache (the first n_fed)
        self._logits: torch.Tensor | None = None  # after the n_fed-th token
        self.prefills = 0  # how often the window was refilled (for tests and the benchmark)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.n_fed

    def append(self, ids) -> None:
        self.tokens.extend(int(i) for i in ids)

    def truncate(self, n: int) -> None:
        if n >= len(self.tokens):
            return
        dropped_fed = self.n_fed - n
        del self.tokens[n:]
        if self.n_fed > n - 1 or self.n_fed >= len(self.tokens):
            # run token n-1 again (same position, same keys) for the logits after it
            self.n_fed = n - 1
            self._logits = None
        if self.n_fed < self.base or (self.relative and dropped_fed > RING_MARGIN - CHUNK_TOKENS):
            self.n_fed = -1  # stale: the next sync refills the cache

    @torch.inference_mode()
    def sync(self, max_passes: int | None = None) -> bool:
        """Feed pending tokens (at most `max_passes` forwards); True once none is left."""
        n = len(self.tokens)
        if n == 0:
            return True
        if self.n_fed < 0 or self.n_fed < self.base or n - self.n_fed >= self.context:
            self._refill(self.context if self.relative else self.context * 3 // 4)
            return True
        passes = 0
        while self.n_fed < n and (max_passes is None or passes < max_passes):
            pos = self.n_fed - self.base
            room = n - self.n_fed if self.relative else self.cache_len - pos
            if room <= 0:  # learned positions, the window full: slide
                self._refill(self.context * 3 // 4, upto=self.n_fed + 1)
            else:
                T = min(room, n - self.n_fed, CHUNK_TOKENS)
                chunk = torch.tensor([self.tokens[self.n_fed : self.n_fed + T]])
                positions = torch.arange(pos, pos + T)
                if T == 1:
                    self._logits = self._step(self.model, chunk[0], positions)[0]
                else:
                    self._logits = self._prefill(self.model, chunk, positions)[0]
                self.n_fed += T
            passes += 1
        return self.n_fed == n

    def _refill(self, window: int, upto: int | None = None) -> None:
        upto = len(self.tokens) if upto is None else upto
        start = max(0, upto - window)
        idx = torch.tensor([self.tokens[start:upto]])
        self._logits = self._prefill(self.model, idx, torch.arange(upto - start))[0]
        self.base, self.n_fed = start, upto
        self.prefills += 1

    def logits(self) -> torch.Tensor:
        """(vocab,) logits of the token after the last one, feeding whatever is pending first."""
        while not self.sync():
            pass
        if self._logits is None:  # truncated to n with nothing pending: run token n-1 again
            self.n_fed -= 1
            self.sync()
        return self._logits


# --- the music: one session -----------------------------------------------------------------------


@dataclass
class Answer:
    k: int  # 1, 2, ... in the session
    first: int  # index of the answer's first token
    start_step: int  # the piece's clock where it starts
    limit_step: int
    max_tokens: int
    sampling: Any
    asked: float  # time.monotonic() when the pause ended (the message arrived)
    first_note_at: float | None = None
    done: bool = False
    cut: bool = False
    n_notes: int = 0


@dataclass
class _Speculation:
    n: int  # tokens before it: a cut to n undoes it
    clock: int  # the clock before it
    end_step: int  # the end of the pause it bets on (the piece's clock)
    answer: Answer
    events: list  # the messages it sampled, sent when it is taken over
    saved: tuple  # (anchor, n_answers, answer) before it
    before: tuple  # (n, grammar) before it
    snapshot: tuple  # the answer's grammar snapshot
    anchor: tuple  # the anchor it set


class DuetSession:
    """One duet: the piece's tokens (each marked PLAYER or MODEL), its clock, and the answer.

    Every method runs on the engine's thread (the model's cache is not shared across threads);
    the socket handler only passes messages in and results out.
    """

    def __init__(self, model, tokenizer, *, context: int, seed: int | None = None, session_id: str = ""):
        self.id = session_id
        self.tokenizer = tokenizer
        self.live = LiveContext(model, context)
        self.owner: list[int] = []
        self.grammar = tokenizer.grammar(1, max_note_tokens=self.live.context)
        self.grammar.start(np.zeros((1, 0), np.int64))
        self._snapshot: tuple[int, Any] | None = None  # (n, grammar copy) at the answer's start
        self.group_of_id = torch.as_tensor(np.asarray(self.grammar.group_of_id), dtype=torch.long)
        self.max_note_steps = tokenizer.max_note_steps
        self.max_polyphony = tokenizer.max_polyphony
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        self.clock = 0  # steps at the end of the tokens
        self.anchor: tuple[float, int] | None = None  # (page ms, piece step)
        self.player_on: dict[int, int] = {}  # sounding pitch -> step of its NOTE_ON
        self.model_on: set[int] = set()
        self.answer: Answer | None = None
        self.n_answers = 0
        self.pause_ms: float | None = None
        self.last_event_ms: float | None = None
        self.speculation: _Speculation | None = None
        self.speculations = {"taken": 0, "undone": 0, "none": 0}  # how answers began (the benchmark's)
        self.closed = False
        # the player's events, checked, waiting for the engine's thread (`drain`): the socket
        # reads on while the model works, and a burst of notes becomes one chunk to feed
        self.inbox: collections.deque = collections.deque()
        self._append([tokenizer.eos_id], PLAYER)  # what precedes every piece in training

    # --- tokens ---------------------------------------------------------------------------------

    def _append(self, ids, who: int) -> None:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if len(self.live) + len(ids) > MAX_SESSION_TOKENS:
            raise DuetError(
                f"the session is full ({MAX_SESSION_TOKENS} tokens): download it and start another"
            )
        self.live.append(ids)
        self.owner.extend([who] * len(ids))
        for i in ids:
            self.grammar.advance(np.array([i]))
            self.clock += int(V.STEPS_OF_ID[i])

    def _truncate(self, n: int) -> None:
        """Drop the tokens after the first n (all inside the current answer or speculation)."""
        if n >= len(self.live):
            return
        removed = np.asarray(self.live.tokens[n:])
        self.clock -= int(V.STEPS_OF_ID[removed].sum())
        self.live.truncate(n)
        del self.owner[n:]
        snap_n, snap = self._snapshot if self._snapshot else (-1, None)
        if snap_n <= n and snap is not None:
            self.grammar = copy.deepcopy(snap)
            for i in self.live.tokens[snap_n:n]:
                self.grammar.advance(np.array([i]))
        else:  # not expected (cuts stay inside the answer); correct but slow
            self.grammar.start(np.asarray([self.live.tokens]))
        self.model_on = {int(p) for p in np.flatnonzero(self.grammar.sounding[0])} - set(self.player_on)

    def _gap(self, steps: int, who: int) -> None:
        if steps > 0:
            self._append(V.split_gap(steps), who)

    def _velocity_note(self, pitch: int, velocity: int, who: int) -> None:
        vbin = int(V.velocity_to_bin(velocity))
        ids = [] if vbin == int(self.grammar.velocity_bin[0]) else [V.VELOCITY_OFFSET + vbin - 1]
        self._append([*ids, V.NOTE_ON_OFFSET + pitch], who)

    def _steps_at(self, t_ms: float) -> int:
        if self.anchor is None:
            self.anchor = (t_ms, self.clock)
        ms, step = self.anchor
        return step + round((t_ms - ms) / 10)

    def _move_to(self, t_ms: float, who: int) -> None:
        """Advance the clock to page time t_ms (never back), a long silence cut to MAX_GAP_SECONDS,
        ending the player's notes that reach the tokenizer's longest note on the way."""
        target = max(self._steps_at(t_ms), self.clock)
        longest = round(MAX_GAP_SECONDS * V.STEPS_PER_SECOND)
        if target - self.clock > longest:
            target = self.clock + longest
            self.anchor = (t_ms, target)
        for pitch, on in sorted(self.player_on.items(), key=lambda kv: kv[1]):
            deadline = on + self.max_note_steps
            if deadline <= target:
                self._gap(max(0, deadline - self.clock), PLAYER)
                self._append([V.NOTE_OFF_OFFSET + pitch], PLAYER)
                del self.player_on[pitch]
        self._gap(target - self.clock, who)

    # --- the player -----------------------------------------------------------------------------

    def post(self, events: list) -> None:
        """(Any thread.) Check the player's events and leave them for `drain`."""
        self.inbox.append([_check_event(e) for e in events])

    def drain(self) -> list[dict]:
        """(The engine's thread.) Play the posted events; messages for the page."""
        out = []
        while self.inbox:
            try:
                out += self.play(self.inbox.popleft())
            except DuetError as e:  # the session is full
                out.append({"type": "error", "error": str(e)})
        return out

    def play(self, events: list) -> list[dict]:
        """The player's events [t_ms, pitch, velocity] in the piece; returns messages for the page
        (a "cut" when they interrupt an answer). Raises DuetError for a malformed event."""
        checked = [_check_event(e) for e in events]
        out = []
        for t, pitch, velocity in checked:
            self._undo_speculation()
            if self.answer is not None and not self.answer.cut:
                cut = self._cut_answer(t)
                if cut is not None:
                    out.append(cut)
            self.last_event_ms = t
            if velocity > 0:
                if (
                    len(self.player_on) + len(self.model_on) >= self.max_polyphony
                    and pitch not in self.player_on
                ):
                    continue  # as the grammar would: no more voices
                self._move_to(t, PLAYER)
                if pitch in self.player_on:  # a second NOTE_ON of a held key: end the first
                    self._append([V.NOTE_OFF_OFFSET + pitch], PLAYER)
                self._velocity_note(pitch, velocity, PLAYER)
                self.player_on[pitch] = self.clock
            elif pitch in self.player_on:
                self._move_to(t, PLAYER)
                if pitch in self.player_on:  # (not ended on the way as too long)
                    self._append([V.NOTE_OFF_OFFSET + pitch], PLAYER)
                    del self.player_on[pitch]
        return out

    def _cut_answer(self, t_ms: float) -> dict | None:
        """The player played at t_ms during answer k: drop what the answer holds from that time
        on, end its sounding notes there. None when the answer had already finished by then."""
        a = self.answer
        at = max(self._steps_at(t_ms), a.start_step)
        if a.done and self.clock <= at:
            self.answer = None
            return None  # it ended before the player came back: nothing to cut
        tokens = self.live.tokens
        clock = a.start_step
        keep = len(tokens)
        for i in range(a.first, len(tokens)):
            step = int(V.STEPS_OF_ID[tokens[i]])
            if step and clock + step > at:
                keep = i
                break
            if not step and clock >= at:
                keep = i
                break
            clock += step
        self._truncate(keep)
        self._gap(at - self.clock, MODEL)  # (a shift cut short, or an answer not sampled that far)
        self._end_model_notes()
        a.cut = a.done = True
        self.answer = None
        return {"type": "cut", "answer": a.k, "t": round((self.clock - a.start_step) / V.STEPS_PER_SECOND, 3)}

    def _end_model_notes(self) -> None:
        for pitch in sorted(self.model_on):
            self._append([V.NOTE_OFF_OFFSET + pitch], MODEL)
        self.model_on.clear()

    # --- the answer -----------------------------------------------------------------------------

    def begin_answer(
        self, t_ms: float, seconds: float, temperature: float = 1.0
    ) -> tuple[Answer, list[dict]]:
        """The pause ended at page time t_ms: close the player's notes there and start an answer
        of `seconds`. Returns it with the messages already sampled: a speculation made for this very
        moment is taken over."""
        from musicgpt.generation.sampling import SamplingConfig

        if self.answer is not None and not self.answer.done:
            raise DuetError(f"answer {self.answer.k} is still playing: interrupt it by playing")
        if not V.strikes_a_note(np.asarray(self.live.tokens)):
            raise DuetError("play a few notes first: the model continues what you play")
        seconds, temperature = _check_answer(seconds, temperature)
        spec = self.speculation
        if spec is not None:
            longest = round(MAX_GAP_SECONDS * V.STEPS_PER_SECOND)
            end = min(max(self._steps_at(t_ms), spec.clock), spec.clock + longest)
            a = spec.answer
            if (end, a.sampling.temperature, a.limit_step - a.start_step) == (
                spec.end_step,
                temperature,
                round(seconds * V.STEPS_PER_SECOND),
            ):  # the pause ended as it bet: take it over
                self.speculation = None
                self.anchor, self.n_answers, self.answer, self._snapshot = spec.anchor, a.k, a, spec.snapshot
                a.asked = time.monotonic()
                self.speculations["taken"] += 1
                return a, spec.events
            self._undo_speculation()
        else:
            self.speculations["none"] += 1
        answer = self._start_answer(t_ms, seconds, SamplingConfig(temperature=temperature))
        return answer, []

    def _start_answer(self, t_ms: float, seconds: float, sampling) -> Answer:
        self._move_to(t_ms, PLAYER)
        for pitch in sorted(self.player_on):  # a held key (or a lost NOTE_OFF) ends with the pause
            self._append([V.NOTE_OFF_OFFSET + pitch], PLAYER)
        self.player_on.clear()
        self.n_answers += 1
        n = len(self.live)
        self._snapshot = (n, copy.deepcopy(self.grammar))
        limit = round(seconds * V.STEPS_PER_SECOND)
        self.answer = Answer(
            k=self.n_answers, first=n, start_step=self.clock, limit_step=self.clock + limit,
            max_tokens=int(seconds * MAX_TOKENS_PER_SECOND) + 1, sampling=sampling, asked=time.monotonic(),
        )  # fmt: skip
        return self.answer

    def sample(
        self, max_tokens: int = ANSWER_CHUNK, until_note: bool = True, budget_s: float = 0.05
    ) -> list[dict]:
        """Sample up to `max_tokens` of the current answer (and for about `budget_s` at most: the
        thread is shared), stopping after its first NOTE_ON when `until_note`; the new notes as
        messages for the page, an "end" when the answer is done."""
        from musicgpt.generation.sampling import next_token

        a = self.answer
        out: list[dict] = []
        if a is None or a.done:
            return out
        started = time.monotonic()
        for i in range(max_tokens):
            if i and time.monotonic() - started > budget_s:
                break
            logits = self.live.logits()
            allowed = self.grammar.allowed()[0]
            allowed[V.EOS_ID] = allowed[V.PAD_ID] = False  # the piece goes on after the answer
            if a.n_notes == 0:  # the answer starts with a note: the pause was the silence
                allowed[V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET] = False
            if not allowed.any():
                allowed = self.grammar.allowed()[0]
            # a model trained before the vocabulary grew (the FIM ids) reads fewer ids than the grammar
            width = logits.shape[-1]
            token = int(next_token(logits[None], a.sampling, torch.from_numpy(allowed[:width])[None],
                                   self.group_of_id[:width], self.generator))  # fmt: skip
            kind, value = int(V.TYPE_OF_ID[token]), int(V.VALUE_OF_ID[token])
            n_answer = len(self.live) - a.first
            if n_answer >= a.max_tokens or (
                kind == EventType.TIME_SHIFT and self.clock + value >= a.limit_step
            ):
                self._gap(a.limit_step - self.clock, MODEL)
                self._end_model_notes()
                a.done = True
                out.append({"type": "end", "answer": a.k, "t": self._t(a),
                            "serverMs": round((time.monotonic() - a.asked) * 1000, 1)})  # fmt: skip
                return out
            self._append([token], MODEL)
            if kind == EventType.NOTE_ON:
                self.model_on.add(value)
                velocity = int(V.bin_to_velocity(int(self.grammar.velocity_bin[0]) or 16))
                out.append(
                    {"type": "on", "answer": a.k, "pitch": value, "velocity": velocity, "t": self._t(a)}
                )
                a.n_notes += 1
                if a.first_note_at is None:
                    a.first_note_at = time.monotonic()
                if until_note:
                    return out
            elif kind == EventType.NOTE_OFF:
                self.model_on.discard(value)
                out.append({"type": "off", "answer": a.k, "pitch": value, "t": self._t(a)})
        return out

    def _t(self, a: Answer) -> float:
        return round((self.clock - a.start_step) / V.STEPS_PER_SECOND, 3)

    # --- speculation: the answer's first note, sampled during the pause ---------------------------

    def speculate(self, seconds: float, temperature: float) -> bool:
        """If the player has stopped (no key held, no answer unfinished), bet that the pause will
        end `pause_ms` after the last event and sample the answer's first note now. A note played
        before then undoes it (a cut of a few tokens); `begin_answer` at that very time takes it
        over. True when a speculation is in place."""
        from musicgpt.generation.sampling import SamplingConfig

        if self.speculation is not None:
            return True
        if (
            self.pause_ms is None
            or self.last_event_ms is None
            or self.player_on
            or (self.answer is not None and not self.answer.done)
            or not V.strikes_a_note(np.asarray(self.live.tokens[-64:]))
        ):
            return False
        seconds, temperature = _check_answer(seconds, temperature)
        n, clock = len(self.live), self.clock
        saved = (self.anchor, self.n_answers, self.answer)
        before = (n, copy.deepcopy(self.grammar))
        answer = self._start_answer(
            self.last_event_ms + self.pause_ms, seconds, SamplingConfig(temperature=temperature)
        )
        events = self.sample()
        self.speculation = _Speculation(
            n, clock, answer.start_step, answer, events, saved, before, self._snapshot, self.anchor
        )
        self.anchor, self.n_answers, self.answer = saved
        return True

    def _undo_speculation(self) -> None:
        spec = self.speculation
        if spec is None:
            return
        self.speculation = None
        self.speculations["undone"] += 1
        self._snapshot = spec.before
        self._truncate(spec.n)
        self.anchor, self.n_answers, self.answer = spec.saved

    # --- the piece ------------------------------------------------------------------------------

    def notes(self) -> dict:
        """The session's notes with who played each (0 player, 1 model), in time order."""
        ids = np.asarray(self.live.tokens[: self._committed()], dtype=np.int64)
        notes = self.tokenizer.decode_notes(ids)
        who = (
            np.asarray(self.owner, dtype=np.int64)[notes.on_token]
            if len(notes.pitch)
            else np.zeros(0, np.int64)
        )
        return {"notes": notes, "who": who}

    def _committed(self) -> int:
        return self.speculation.n if self.speculation is not None else len(self.live)

    def midi_bytes(self) -> bytes:
        """The whole session as a MIDI file: track "player" and track "musicgpt" (1 tick = 1 ms)."""
        import pretty_midi

        d = self.notes()
        notes, who = d["notes"], d["who"]
        pm = pretty_midi.PrettyMIDI(resolution=500, initial_tempo=120.0)
        for k, name in ((PLAYER, "player"), (MODEL, "musicgpt")):
            inst = pretty_midi.Instrument(program=0, name=name)
            inst.notes = [
                pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s), end=float(e))
                for p, v, s, e, w in zip(
                    notes.pitch, notes.velocity, notes.start, notes.end, who, strict=True
                )
                if w == k
            ]
            pm.instruments.append(inst)
        buf = io.BytesIO()
        pm.write(buf)
        return buf.getvalue()

    def attention_html(self, model) -> str:
        """The attention page of the session's last block of tokens (as the app's samples)."""
        from musicgpt.viz.attention import AttentionData
        from musicgpt.viz.html import attention_page

        ids = np.asarray(self.live.tokens[: self._committed()], dtype=np.int64)
        if not V.strikes_a_note(ids):
            raise DuetError("the session has no notes yet")
        block = model.config.block_size
        times = self.tokenizer.token_times(ids)
        first = len(ids) - block
        start = None if first <= 0 else float(times[first]) + 0.5 / V.STEPS_PER_SECOND
        data = AttentionData.from_music(model, ids, self.tokenizer, start, None)
        d = self.notes()
        subtitle = (
            f"{data.n_tokens} tokens, {len(data.notes)} notes, {data.token_times[0]:.2f}-"
            f"{data.token_times[-1]:.2f} s of a duet: {int((d['who'] == PLAYER).sum())} notes played, "
            f"{int((d['who'] == MODEL).sum())} answered in {self.n_answers} answers"
        )
        return attention_page(data, title="duet, attention", subtitle=subtitle)


def _check_event(e) -> tuple[float, int, int]:
    if not isinstance(e, (list, tuple)) or len(e) != 3:
        raise DuetError(f"an event is [time_ms, pitch, velocity], got {str(e)[:60]}")
    t, pitch, velocity = e
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 <= t < 1e10:
        raise DuetError(f"an event's time is milliseconds >= 0, got {str(t)[:30]}")
    for name, x in (("pitch", pitch), ("velocity", velocity)):
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 127:
            raise DuetError(f"an event's {name} is an integer 0-127, got {str(x)[:30]}")
    return float(t), pitch, velocity


def _check_answer(seconds, temperature) -> tuple[float, float]:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0.5 <= seconds <= MAX_ANSWER_SECONDS
    ):
        raise DuetError(f"an answer lasts 0.5-{MAX_ANSWER_SECONDS:g} seconds, got {str(seconds)[:30]}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        raise DuetError(f"the temperature is 0-2, got {str(temperature)[:30]}")
    return float(seconds), float(temperature)


# --- the engine: one thread for every session's model work ---------------------------------------


class DuetEngine:
    """The duet sessions of one app: at most MAX_LIVE_SESSIONS open, the last KEEP_FINISHED closed
    ones kept for download. `run(fn, ...)` runs fn on the engine's single thread."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        context: int | None = None,
        speculate: bool = True,
        incremental: bool = True,
        threads: int = 1,
    ):
        from musicgpt.generation.piano import default_context

        self.template = model_sharing_weights(model)
        self.tokenizer = tokenizer
        self.context = context or default_context(model)
        # the benchmark's comparisons: no speculation; nothing fed before the pause ends (the
        # request/response design: the window is prefilled when the answer is asked for)
        self.speculate = speculate and incremental
        self.incremental = incremental
        # One intra-op thread on the duet's thread (OpenMP's setting is per thread: the jobs' thread
        # keeps its own). A decode step of one row is too small to split: on 2 shared cores two
        # threads made music-20m's step 4.9x slower (115 vs 24 ms at p50, benchmarks/RESULTS.md).
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="musicgpt-duet",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )
        self._lock = threading.Lock()
        self.live: dict[str, DuetSession] = {}
        self.finished: OrderedDict[str, DuetSession] = OrderedDict()
        self.submit(self._warm_up)

    def _warm_up(self) -> None:
        """A first forward of each kind costs far more than the next ones (allocation, kernel
        choice): spend it at start-up rather than on a player's first answer."""
        live = LiveContext(model_sharing_weights(self.template), self.context)
        for n in (1, 2, 3, 5, 8, CHUNK_TOKENS, 1, 1):
            live.append([V.EOS_ID] * n)
            live.logits()
        live.model.clear_cache()

    async def run(self, fn, *args):
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def submit(self, fn, *args) -> None:
        """Run fn on the engine's thread without waiting for it (after a shutdown: not at all)."""
        try:
            self._pool.submit(fn, *args)
        except RuntimeError:
            pass

    def open_session(self, seed: int | None = None) -> DuetSession:
        """(On the engine's thread.) A new session, or DuetError when too many are open."""
        with self._lock:
            if len(self.live) >= MAX_LIVE_SESSIONS:
                raise DuetError(f"{MAX_LIVE_SESSIONS} duets are already open: try again when one has closed")
            sid = secrets.token_urlsafe(12)
            self.live[sid] = None  # reserved
        try:
            session = DuetSession(model_sharing_weights(self.template), self.tokenizer,
                                  context=self.context, seed=seed, session_id=sid)  # fmt: skip
        except BaseException:
            with self._lock:
                del self.live[sid]
            raise
        with self._lock:
            self.live[sid] = session
        return session

    def close_session(self, session: DuetSession) -> None:
        """(On the engine's thread.) Free its KV cache; keep its music for download."""
        session.drain()  # notes read before the socket closed are part of the piece
        session.closed = True
        session._undo_speculation()
        if session.answer is not None and not session.answer.done:
            session.answer.done = True
            session._end_model_notes()
        session.live.model.clear_cache()
        with self._lock:
            self.live.pop(session.id, None)
            self.finished[session.id] = session
            while len(self.finished) > KEEP_FINISHED:
                self.finished.popitem(last=False)

    def get(self, sid: str) -> DuetSession | None:
        with self._lock:
            return self.live.get(sid) or self.finished.get(sid)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
