"""`musicgpt duet`: the duet page's call and response between two MIDI ports, in a terminal.

The same `DuetSession` as the page (musicgpt/serve/duet.py): the player's notes are fed to the
model as they come in, the answer starts when the player has paused, is sent to the output port
note by note as it is sampled (on channel 2), and stops when the player plays again. Needs mido's
default backend, python-rtmidi (`pip install musicgpt[midi]`), and ports to open.
"""

from __future__ import annotations

import heapq
import time

from musicgpt import argtypes
from musicgpt.errors import MusicGPTError
from musicgpt.models import DEFAULT_MODEL

MODEL_CHANNEL = 1  # the answer goes out on channel 2, the player's notes are not echoed


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "duet",
        help="play with the model between MIDI ports: it answers when you pause",
        description=(
            "Reads notes from --in, and after a pause of --pause-ms writes the model's answer of --seconds "
            "to --out; playing again interrupts it. Ctrl+C stops and, with --save, writes the duet as MIDI."
        ),
    )
    p.add_argument("--in", dest="inport", required=True, help="the MIDI input port (your keyboard)")
    p.add_argument("--out", dest="outport", required=True, help="the MIDI output port (a synth)")
    p.add_argument("--checkpoint", type=argtypes.checkpoint, default=DEFAULT_MODEL,
                   help=f"a piano model (default: {DEFAULT_MODEL})")  # fmt: skip
    p.add_argument("--pause-ms", type=argtypes.int_range(100, 10_000), default=1000,
                   help="the silence that hands over to the model (default 1000)")  # fmt: skip
    p.add_argument("--seconds", type=argtypes.positive_number(30, "s"), default=4.0,
                   help="the length of each answer (default 4, at most 30)")  # fmt: skip
    p.add_argument("--temperature", type=argtypes.non_negative_float, default=1.0, help="0-2 (default 1)")
    p.add_argument("--save", type=argtypes.output_file, default=None, help="write the duet here at the end")
    p.set_defaults(run=run)


def open_ports(in_name: str, out_name: str):
    """(input, output) mido ports, or MusicGPTError naming the ports that exist."""
    try:
        import mido

        inputs, outputs = mido.get_input_names(), mido.get_output_names()
    except Exception as e:  # no rtmidi, or no MIDI system (ALSA, CoreMIDI, WinMM) to open
        problem = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise MusicGPTError(
            f"no MIDI ports can be opened here ({problem}); ports found: none "
            "(mido needs python-rtmidi: pip install 'musicgpt[midi]')"
        ) from None
    missing = [f"--in {in_name!r}" for _ in [0] if in_name not in inputs]
    missing += [f"--out {out_name!r}" for _ in [0] if out_name not in outputs]
    if missing:
        raise MusicGPTError(
            f"no MIDI port {' or '.join(missing)}; input ports found: {', '.join(map(repr, inputs)) or 'none'}; "
            f"output ports found: {', '.join(map(repr, outputs)) or 'none'}"
        )
    return mido.open_input(in_name), mido.open_output(out_name)


def duet_loop(session, inport, outport, *, pause_ms: float, seconds: float, temperature: float = 1.0,
              stop=lambda: False, clock=time.monotonic) -> None:  # fmt: skip
    """Call and response between two mido ports until `stop()` (or Ctrl+C)."""
    import mido

    from musicgpt.serve.duet import ANSWER_CHUNK, LOOKAHEAD_SECONDS, SYNC_STEPS

    session.pause_ms = pause_ms
    held: set[int] = set()
    last = None  # ms of the last event
    played = False
    answer, origin = None, 0.0  # the answer playing, and the clock (s) of its start
    out: list = []  # heap of (time s, order, message) to send
    sounding: set[int] = set()  # the answer's notes sent as on and not yet off
    order = 0
    while not stop():
        now = clock()
        for msg in inport.iter_pending():
            if msg.type not in ("note_on", "note_off"):
                continue
            velocity = msg.velocity if msg.type == "note_on" else 0
            if velocity and answer is not None:  # playing interrupts the answer
                out.clear()
                for p in sorted(sounding):
                    outport.send(mido.Message("note_off", channel=MODEL_CHANNEL, note=p))
                sounding.clear()
                answer = None
            session.play([[now * 1000, msg.note, velocity]])
            (held.add if velocity else held.discard)(msg.note)
            last, played = now * 1000, True
        while out and out[0][0] <= now:
            _, _, m = heapq.heappop(out)
            (sounding.add if m.type == "note_on" else sounding.discard)(m.note)
            outport.send(m)
        if answer is None and played and not held and now * 1000 >= last + pause_ms:
            answer, events = session.begin_answer(last + pause_ms, seconds, temperature)
            origin, played = now, False
            events += session.sample()
        elif answer is not None and not answer.done:
            sent = max((t for t, _, _ in out), default=now)
            events = session.sample(ANSWER_CHUNK, until_note=False) if sent - now < LOOKAHEAD_SECONDS else []
        else:
            if answer is not None and not out:
                answer = None
            if session.live.pending:
                session.live.sync(SYNC_STEPS)
            elif played and not held and last is not None and now * 1000 >= last + pause_ms / 2:
                session.speculate(seconds, temperature)
            else:
                time.sleep(0.002)
            continue
        for e in events:
            if e["type"] in ("on", "off"):
                kind = "note_on" if e["type"] == "on" else "note_off"
                m = mido.Message(kind, channel=MODEL_CHANNEL, note=e["pitch"], velocity=e.get("velocity", 0))
                order += 1
                heapq.heappush(out, (origin + e["t"], order, m))


def run(args) -> int:
    from musicgpt.serve.duet import _check_answer

    _check_answer(args.seconds, args.temperature)
    inport, outport = open_ports(args.inport, args.outport)
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.serve.duet import DuetSession, model_sharing_weights

    model, tokenizer = load_checkpoint(args.checkpoint, "cpu")
    from musicgpt.generation.piano import default_context

    session = DuetSession(model_sharing_weights(model), tokenizer, context=default_context(model))
    print(
        f"musicgpt duet: {args.inport} -> model -> {args.outport}; play, then pause (Ctrl+C stops)",
        flush=True,
    )
    try:
        duet_loop(session, inport, outport, pause_ms=args.pause_ms, seconds=args.seconds,
                  temperature=args.temperature)  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        outport.reset()  # all notes off
        inport.close()
        outport.close()
        if args.save:
            from musicgpt.io import atomic_write_bytes

            atomic_write_bytes(args.save, session.midi_bytes())
            print(f"musicgpt duet: wrote {args.save}", flush=True)
    return 130
