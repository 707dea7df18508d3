"""`musicgpt duet`: a one-line error where no MIDI port can be opened, and the call and response
loop between two mido ports (in-memory ports written as mido documents: a BaseInput whose
_receive hands out a scripted player's messages on time, a BaseOutput whose _send records)."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import mido
import pretty_midi
import pytest

from musicgpt.commands.duet import MODEL_CHANNEL, duet_loop
from musicgpt.serve.duet import DuetSession, model_sharing_weights
from musicgpt.tokenizers.performance import PerformanceTokenizer


def test_no_midi_port_is_one_line_and_exit_2(tmp_path):
    try:
        inputs = mido.get_input_names()
    except Exception:
        inputs = None  # no backend (python-rtmidi) or no MIDI system: the usual case here
    if inputs is not None and "no-such-port" in inputs:
        pytest.skip("a port called no-such-port exists")
    r = subprocess.run(
        [sys.executable, "-m", "musicgpt.cli", "duet", "--in", "no-such-port", "--out", "nor-this"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("musicgpt")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    if inputs is None:
        assert lines[0].startswith("musicgpt: error: no MIDI ports can be opened here (")
        assert lines[0].endswith("ports found: none (mido needs python-rtmidi: pip install 'musicgpt[midi]')")
    else:
        assert lines[0].startswith(
            "musicgpt: error: no MIDI port --in 'no-such-port' or --out 'nor-this'; input ports found: "
        )


class ScriptedKeyboard(mido.ports.BaseInput):
    """Hands out (time s, message) pairs once the clock has reached their time."""

    def __init__(self, script, clock):
        super().__init__("scripted keyboard")
        self.script, self.clock = list(script), clock

    def _receive(self, block=True):
        if self.script and self.script[0][0] <= self.clock():
            return self.script.pop(0)[1]
        return None


class Recorder(mido.ports.BaseOutput):
    def __init__(self, clock):
        super().__init__("recorder")
        self.clock, self.sent = clock, []

    def _send(self, msg):
        self.sent.append((self.clock(), msg))


def test_the_loop_answers_a_pause_and_stops_when_the_player_plays(tiny_checkpoint):
    from musicgpt.checkpoints import load_checkpoint

    model, tokenizer = load_checkpoint(tiny_checkpoint)
    session = DuetSession(model_sharing_weights(model), PerformanceTokenizer(), context=256, seed=0)
    t0 = time.monotonic()

    def clock():
        return time.monotonic() - t0

    script = []
    for i, pitch in enumerate((60, 62, 64)):
        script += [(0.15 * i, mido.Message("note_on", note=pitch, velocity=80)),
                   (0.15 * i + 0.1, mido.Message("note_off", note=pitch))]  # fmt: skip
    script += [(1.6, mido.Message("note_on", note=72, velocity=90)), (1.7, mido.Message("note_off", note=72))]
    keyboard, synth = ScriptedKeyboard(script, clock), Recorder(clock)
    # (stopped before the pause after the last note would end, at 2.0 s, and bring an answer)
    duet_loop(session, keyboard, synth, pause_ms=300, seconds=8, stop=lambda: clock() > 1.9)

    # the answer: from the end of the pause (0.4 + 0.3 s) until the player came back at 1.6 s
    ons = [(t, m) for t, m in synth.sent if m.type == "note_on" and m.velocity > 0]
    assert ons and all(m.channel == MODEL_CHANNEL for _, m in synth.sent)
    assert 0.69 < ons[0][0] < 1.6 and ons[-1][0] < 1.6 + 0.05
    # everything it started was ended, the sounding ones at the interruption
    started = sorted(m.note for _, m in ons)
    ended = sorted(m.note for _, m in synth.sent if m.type == "note_off" or m.velocity == 0)
    assert all(started.count(p) <= ended.count(p) for p in set(started))
    player, answer = pretty_midi.PrettyMIDI(io.BytesIO(session.midi_bytes())).instruments
    assert [n.pitch for n in player.notes] == [60, 62, 64, 72]
    assert answer.notes and min(n.start for n in answer.notes) == pytest.approx(0.7, abs=0.011)
    assert max(n.end for n in answer.notes) <= player.notes[-1].start + 1e-6


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--pause-ms", "50"], "argument --pause-ms"),
        (["--pause-ms", "abc"], "argument --pause-ms"),
        (["--seconds", "31"], "argument --seconds"),
        (["--seconds", "nan"], "argument --seconds"),
        (["--seconds", "0.2"], "an answer lasts 0.5-30 seconds, got 0.2"),
        (["--temperature", "-1"], "argument --temperature"),
        (["--temperature", "3"], "the temperature is 0-2, got 3.0"),
        (["--checkpoint", "no/such/model"], "argument --checkpoint"),
        (["--save", "no/such/folder/"], "argument --save"),
    ],
)
def test_bad_values_are_one_line_before_any_port_is_opened(args, words, capsys):
    from musicgpt.cli import main

    assert main(["duet", "--in", "a", "--out", "b", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and words in err, err
