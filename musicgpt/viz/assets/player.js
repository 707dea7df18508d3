// A small piano synth and a note player on WebAudio, shared by the attention page (inlined, so the
// page stays one offline file) and by the `musicgpt serve` app. Nothing is fetched: every sound is
// made from oscillators.
//
//   const player = new MusicGPTPlayer.Player(notes, { onTick(t) {...}, onStop(t) {...} });
//   player.toggle();  // notes: {pitch: [], velocity: [], start: [], end: []}, times in seconds
"use strict";
(function (root) {
  const AC = root.AudioContext || root.webkitAudioContext;

  // Partials of one voice (ratio to the fundamental, detune in cents, gain, waveform). A slightly
  // detuned pair beats like a piano's two or three strings per note; the octave adds brightness.
  const PARTIALS = [
    [1, -4, 0.55, "triangle"],
    [1, 5, 0.35, "sine"],
    [2, 2, 0.12, "sine"],
  ];
  const ATTACK = 0.004; // s: a hammer strikes; no audible ramp
  const RELEASE = 0.09; // s: the damper falls on the string when the key is let go

  class Synth {
    constructor() {
      this.ctx = null;
      this.voices = 0; // notes started, read by tests
    }
    // The context is made on first use: browsers let it run only after a user gesture.
    start() {
      if (!AC) return null;
      if (!this.ctx) {
        this.ctx = new AC();
        this.comp = this.ctx.createDynamicsCompressor(); // dense chords stay below clipping
        this.comp.connect(this.ctx.destination);
        this.out = this.ctx.createGain(); // the bus every note goes through
        this.out.gain.value = 0.6;
        this.out.connect(this.comp);
      }
      if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
      return this.ctx;
    }
    get running() {
      return !!this.ctx && this.ctx.state === "running";
    }
    // One note at audio time `when`, lasting `duration` seconds.
    note(pitch, velocity, when, duration) {
      const ctx = this.ctx;
      const freq = 440 * 2 ** ((pitch - 69) / 12);
      // Loudness grows faster than linearly with velocity, as a piano's does.
      const peak = 0.03 + 0.22 * (velocity / 127) ** 1.6;
      // A struck string decays exponentially, low strings for longer (about 3 s at A0, 0.4 s at C8).
      const tau = 0.4 + 2.6 * Math.max(0, Math.min(1, (108 - pitch) / 87));
      const env = ctx.createGain();
      env.gain.setValueAtTime(0, when);
      env.gain.linearRampToValueAtTime(peak, when + ATTACK);
      env.gain.setTargetAtTime(0, when + ATTACK, tau / 3);
      const off = when + Math.max(duration, ATTACK);
      env.gain.setTargetAtTime(0, off, RELEASE / 3); // from whatever the decay reached
      env.connect(this.out);
      for (const [ratio, cents, gain, type] of PARTIALS) {
        if (freq * ratio > ctx.sampleRate / 2) continue; // above Nyquist: it would alias
        const osc = ctx.createOscillator(), g = ctx.createGain();
        osc.type = type;
        osc.frequency.value = freq * ratio;
        osc.detune.value = cents;
        g.gain.value = gain;
        osc.connect(g);
        g.connect(env);
        osc.start(when);
        osc.stop(off + RELEASE * 3);
      }
      this.voices++;
    }
    stopAll() {
      // Fade out everything scheduled so far (a cut would click), and route new notes to a new bus.
      if (!this.ctx) return;
      const old = this.out;
      old.gain.setTargetAtTime(0, this.ctx.currentTime, 0.015);
      setTimeout(() => old.disconnect(), 250);
      this.out = this.ctx.createGain();
      this.out.gain.value = 0.6;
      this.out.connect(this.comp);
    }
  }

  const LOOKAHEAD = 0.25; // s of notes handed to the audio clock ahead of time
  const SCHEDULE_MS = 40; // how often the scheduler runs (a timer keeps running in background tabs)

  // Plays notes from a position, and reports the position on every animation frame. Its clock is
  // the page's (performance.now): the picture moves even where audio cannot start; each note goes
  // to the audio clock relative to "now" when it is scheduled.
  class Player {
    constructor(notes, { onTick = () => {}, onStop = () => {}, synth = null, from = null, to = null } = {}) {
      this.notes = notes;
      this.order = notes.start.map((_, i) => i).sort((a, b) => notes.start[a] - notes.start[b]);
      this.from = from !== null ? from : notes.start.length ? Math.min(...notes.start) : 0;
      this.to = to !== null ? to : notes.end.length ? Math.max(...notes.end) : 0;
      this.synth = synth || Player.sharedSynth();
      this.onTick = onTick;
      this.onStop = onStop;
      this.pos = this.from;
      this.playing = false;
    }
    static sharedSynth() {
      if (!Player._synth) Player._synth = new Synth();
      return Player._synth;
    }
    position() {
      return this.playing ? this.pos0 + (performance.now() - this.wall0) / 1000 : this.pos;
    }
    play() {
      if (this.playing) return;
      if (Player.current && Player.current !== this) Player.current.pause(); // one player at a time
      Player.current = this;
      if (this.pos >= this.to - 1e-3) this.pos = this.from; // at the end: from the top
      this.synth.start();
      this.playing = true;
      this.pos0 = this.pos;
      this.wall0 = performance.now();
      // the first note at or after the position (notes already sounding there are not replayed)
      this.next = this.order.findIndex((i) => this.notes.start[i] >= this.pos - 1e-6);
      if (this.next < 0) this.next = this.order.length;
      this.timer = setInterval(() => this.schedule(), SCHEDULE_MS);
      this.schedule();
      const frame = () => {
        if (!this.playing) return;
        const t = this.position();
        if (t >= this.to) { this.stop(this.to); return; }
        this.onTick(t);
        this.raf = requestAnimationFrame(frame);
      };
      this.raf = requestAnimationFrame(frame);
    }
    schedule() {
      const t = this.position(), s = this.synth;
      while (this.next < this.order.length) {
        const i = this.order[this.next], start = this.notes.start[i];
        if (start > t + LOOKAHEAD) break;
        this.next++;
        // Late notes (a throttled timer) are skipped rather than played in a heap; a context that
        // is not running (no audio device, no gesture yet) plays nothing, and the picture goes on.
        if (!s.running || start < t - 0.05) continue;
        const end = Math.min(this.notes.end[i], this.to);
        const when = s.ctx.currentTime + Math.max(0, start - t); // a note a little late starts now
        s.note(this.notes.pitch[i], this.notes.velocity[i], when, Math.max(end - Math.max(start, t), 0.01));
      }
    }
    pause() {
      if (!this.playing) return;
      this.pos = Math.min(this.position(), this.to);
      this.halt();
      this.onStop(this.pos);
    }
    // To `at` (default: the start), silent.
    stop(at) {
      const was = this.playing;
      this.pos = at === undefined ? this.from : at;
      this.halt();
      if (was || at === undefined) this.onStop(this.pos);
    }
    halt() {
      this.playing = false;
      clearInterval(this.timer);
      cancelAnimationFrame(this.raf);
      this.synth.stopAll();
      if (Player.current === this) Player.current = null;
    }
    toggle() {
      if (this.playing) this.pause(); else this.play();
    }
    seek(t) {
      const playing = this.playing;
      if (playing) this.halt();
      this.pos = Math.max(this.from, Math.min(t, this.to));
      if (playing) this.play(); else this.onTick(this.pos);
    }
    // Indices of the notes sounding at time t, and the one struck last (-1 before the first).
    sounding(t) {
      const on = [];
      let last = -1;
      for (const i of this.order) {
        const s = this.notes.start[i];
        if (s > t) break;
        last = i;
        if (this.notes.end[i] > t) on.push(i);
      }
      return { on, last };
    }
  }

  root.MusicGPTPlayer = { Synth, Player };
})(window);
