// The duet page: every note played goes to the server at once (a WebSocket, see
// musicgpt/serve/duet.py for the protocol), so that the model has read it before the pause ends.
// When the player has been silent for the pause, the page asks for an answer and plays its notes
// as they stream in, on the synth of player.js and out to a MIDI port; playing interrupts it.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const LOW = 48; // C3, the first key drawn
  const KEYS = 29; // C3..E5
  // two rows of the computer keyboard, by physical key (event.code), as a tracker lays them out
  const CODES = {};
  "KeyZ KeyS KeyX KeyD KeyC KeyV KeyG KeyB KeyH KeyN KeyJ KeyM Comma".split(" ").forEach((c, i) => (CODES[c] = 48 + i));
  "KeyQ Digit2 KeyW Digit3 KeyE KeyR Digit5 KeyT Digit6 KeyY Digit7 KeyU KeyI Digit9 KeyO Digit0 KeyP"
    .split(" ").forEach((c, i) => (CODES[c] = 60 + i));
  const LABELS = {};
  for (const [c, p] of Object.entries(CODES)) LABELS[p] = c.replace(/^Key|^Digit/, "").replace("Comma", ",").toLowerCase();
  const VELOCITY = 80; // of the computer keyboard and the mouse
  const BLACK = new Set([1, 3, 6, 8, 10]);

  const synth = MusicGPTPlayer.Player.sharedSynth();
  const PARTIALS = [[1, -4, 0.55, "triangle"], [1, 5, 0.35, "sine"], [2, 2, 0.12, "sine"]]; // player.js's voice

  // What the tests read: every message, the voices started, each answer's state.
  const duet = (window.duet = { messages: [], voices: { player: 0, model: 0 }, answers: {}, session: null });

  // --- sound: a held voice (player.js's Synth plays notes of known length) -------------------------
  function voice(pitch, velocity, when, bus) {
    const ctx = synth.ctx;
    if (!ctx) return null;
    const freq = 440 * 2 ** ((pitch - 69) / 12);
    const peak = 0.03 + 0.22 * (velocity / 127) ** 1.6;
    const tau = 0.4 + 2.6 * Math.max(0, Math.min(1, (108 - pitch) / 87));
    const env = ctx.createGain();
    env.gain.setValueAtTime(0, when);
    env.gain.linearRampToValueAtTime(peak, when + 0.004);
    env.gain.setTargetAtTime(0, when + 0.004, tau / 3);
    env.connect(bus);
    const oscs = [];
    for (const [ratio, cents, gain, type] of PARTIALS) {
      if (freq * ratio > ctx.sampleRate / 2) continue;
      const osc = ctx.createOscillator(), g = ctx.createGain();
      osc.type = type;
      osc.frequency.value = freq * ratio;
      osc.detune.value = cents;
      g.gain.value = gain;
      osc.connect(g);
      g.connect(env);
      osc.start(when);
      osc.stop(when + 12); // the longest a note sounds (the tokenizer's 10 s)
      oscs.push(osc);
    }
    return {
      off(at) {
        const t = Math.max(at, when + 0.004);
        env.gain.cancelScheduledValues(t);
        env.gain.setTargetAtTime(0, t, 0.03);
        for (const o of oscs) o.stop(t + 0.3);
      },
    };
  }
  function newBus() {
    const ctx = synth.start();
    if (!ctx) return null;
    const bus = ctx.createGain();
    bus.connect(synth.comp);
    return bus;
  }

  // --- MIDI ports --------------------------------------------------------------------------------
  let midiOut = null;
  const MODEL_CHANNEL = 1; // the answer goes out on channel 2
  if (navigator.requestMIDIAccess) {
    navigator.requestMIDIAccess().then((access) => {
      const fill = (select, ports, label) => {
        for (const p of ports.values()) select.add(new Option(p.name, p.id));
        $(label).hidden = select.options.length < 2;
      };
      fill($("midi-in"), access.inputs, "midi-in-label");
      fill($("midi-out"), access.outputs, "midi-out-label");
      $("midi-in").addEventListener("change", () => {
        for (const p of access.inputs.values()) p.onmidimessage = null;
        const port = access.inputs.get($("midi-in").value);
        if (port) port.onmidimessage = (e) => {
          const [status, pitch, velocity] = e.data;
          if ((status & 0xf0) === 0x90 && velocity > 0) noteOn(pitch, velocity);
          else if ((status & 0xf0) === 0x80 || (status & 0xf0) === 0x90) noteOff(pitch);
        };
      });
      $("midi-out").addEventListener("change", () => { midiOut = access.outputs.get($("midi-out").value) || null; });
    }, () => {}); // refused or absent: the computer keyboard and the mouse remain
  }

  // --- the keyboard --------------------------------------------------------------------------------
  const keyEls = {};
  (function drawKeyboard() {
    const kb = $("keyboard");
    let whites = 0;
    for (let p = LOW; p < LOW + KEYS; p++) if (!BLACK.has(p % 12)) whites++;
    const w = 100 / whites;
    let x = 0;
    for (let p = LOW; p < LOW + KEYS; p++) {
      const el = document.createElement("div");
      const black = BLACK.has(p % 12);
      el.className = "key " + (black ? "black" : "white");
      el.dataset.pitch = p;
      el.style.left = (black ? x - w * 0.3 : x) + "%";
      el.style.width = (black ? w * 0.6 : w) + "%";
      if (!black) x += w;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = LABELS[p] || "";
      el.appendChild(label);
      el.addEventListener("pointerdown", (e) => { e.preventDefault(); noteOn(p, VELOCITY); });
      for (const type of ["pointerup", "pointerleave"]) el.addEventListener(type, () => noteOff(p));
      kb.appendChild(el);
      keyEls[p] = el;
    }
  })();
  function light(pitch, cls, on) {
    const el = keyEls[pitch];
    if (el) el.classList.toggle(cls, on);
  }
  document.addEventListener("keydown", (e) => {
    const p = CODES[e.code];
    if (p === undefined || e.repeat || e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "INPUT") return;
    e.preventDefault();
    noteOn(p, VELOCITY);
  });
  document.addEventListener("keyup", (e) => {
    const p = CODES[e.code];
    if (p !== undefined) noteOff(p);
  });
  // a key released while the page had no focus never sends its keyup: release what is held
  window.addEventListener("blur", () => { for (const p of [...held.keys()]) noteOff(p); });

  // --- the player ----------------------------------------------------------------------------------
  let ws = null, playerBus = null;
  const held = new Map(); // pitch -> voice
  let lastEvent = null, pauseTimer = null, playedSince = false;
  let current = null; // the answer asked for or playing: {k, pauseEnd, origin, bus, voices, end, done}

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }
  function settings() {
    return { pause: +$("pause").value || 1000, seconds: +$("seconds").value || 4, temperature: +$("temperature").value };
  }
  for (const id of ["pause", "seconds", "temperature"]) $(id).addEventListener("change", () => send({ type: "settings", ...settings() }));

  function noteOn(pitch, velocity) {
    const t = performance.now();
    interrupt(t);
    if (!playerBus || !synth.ctx) playerBus = newBus();
    if (held.has(pitch)) held.get(pitch)?.off(synth.ctx ? synth.ctx.currentTime : 0);
    const v = playerBus ? voice(pitch, velocity, synth.ctx.currentTime, playerBus) : null;
    held.set(pitch, v);
    duet.voices.player++;
    light(pitch, "down", true);
    send({ type: "notes", events: [[t, pitch, velocity]] });
    lastEvent = t;
    playedSince = true;
    clearTimeout(pauseTimer);
  }
  function noteOff(pitch) {
    if (!held.has(pitch)) return;
    const t = performance.now();
    held.get(pitch)?.off(synth.ctx ? synth.ctx.currentTime : 0);
    held.delete(pitch);
    light(pitch, "down", false);
    send({ type: "notes", events: [[t, pitch, 0]] });
    lastEvent = t;
    if (held.size === 0) {
      clearTimeout(pauseTimer);
      pauseTimer = setTimeout(pauseEnded, settings().pause);
    }
  }
  function pauseEnded() {
    if (held.size || !playedSince || (current && !current.done)) return;
    const s = settings();
    const pauseEnd = lastEvent + s.pause; // the server bets on this very time (speculation)
    playedSince = false;
    current = { k: null, pauseEnd, origin: null, bus: newBus(), voices: new Map(), timers: [], done: false, notes: 0 };
    send({ type: "answer", time: pauseEnd, seconds: s.seconds, temperature: s.temperature });
    $("state").textContent = "the model answers…";
  }

  // The player plays during the answer: silence it now, and the server cuts it at this time.
  function interrupt(t) {
    const a = current;
    if (!a || a.interrupted || (a.done && (a.origin === null || t >= a.origin + a.end * 1000))) return;
    a.interrupted = true;
    a.done = true;
    if (a.bus) {
      a.bus.gain.setTargetAtTime(0, synth.ctx.currentTime, 0.01);
      const bus = a.bus;
      setTimeout(() => bus.disconnect(), 300);
    }
    for (const id of a.timers) clearTimeout(id);
    for (const el of document.querySelectorAll(".key.model")) el.classList.remove("model");
    if (midiOut) {
      if (midiOut.clear) midiOut.clear();
      for (const p of a.voices.keys()) midiOut.send([0x80 | MODEL_CHANNEL, p, 0]);
    }
    if (a.k !== null) record(a.k, { interrupted: true });
    $("state").textContent = "interrupted: your turn";
  }

  // --- the answer as it streams in -------------------------------------------------------------------
  function at(a, t) { // page time (ms) of answer time t (s)
    return a.origin + t * 1000;
  }
  function onNote(m) {
    const a = current;
    if (!a || a.interrupted) return;
    const now = performance.now();
    if (a.k === null) { // its first note: the answer starts sounding now
      a.k = m.answer;
      a.origin = now - m.t * 1000;
      const latency = now - a.pauseEnd;
      record(a.k, { latency, notes: 0 });
      send({ type: "started", answer: a.k, time: a.origin });
    }
    if (m.answer !== a.k) return;
    const when = at(a, m.t), delay = Math.max(0, when - now);
    const ctxWhen = synth.ctx ? synth.ctx.currentTime + delay / 1000 : 0;
    if (m.type === "on") {
      const prev = a.voices.get(m.pitch);
      if (prev) prev.off(ctxWhen);
      a.voices.set(m.pitch, a.bus ? voice(m.pitch, m.velocity, ctxWhen, a.bus) : null);
      duet.voices.model++;
      a.notes++;
      record(a.k, { notes: a.notes });
      a.timers.push(setTimeout(() => light(m.pitch, "model", true), delay));
      if (midiOut) midiOut.send([0x90 | MODEL_CHANNEL, m.pitch, m.velocity], when);
    } else {
      a.voices.get(m.pitch)?.off(ctxWhen);
      a.voices.delete(m.pitch);
      a.timers.push(setTimeout(() => light(m.pitch, "model", false), delay));
      if (midiOut) midiOut.send([0x80 | MODEL_CHANNEL, m.pitch, 0], when);
    }
  }

  function record(k, fields) {
    const r = (duet.answers[k] = Object.assign(duet.answers[k] || { k }, fields));
    let li = document.querySelector(`#answers li[data-k="${k}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.k = k;
      $("answers").appendChild(li);
    }
    li.classList.toggle("cut", !!r.interrupted);
    li.textContent = `${r.notes || 0} notes, first after ${r.latency === undefined ? "…" : Math.round(r.latency) + " ms"}` +
      (r.seconds !== undefined ? `, ${r.seconds} s` : "") + (r.interrupted ? ", interrupted" : "");
    li.dataset.latency = r.latency === undefined ? "" : r.latency.toFixed(1);
  }

  // --- the socket --------------------------------------------------------------------------------------
  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/duet/ws");
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      duet.messages.push(m);
      if (m.type === "ready") {
        duet.session = m.session;
        $("about").textContent = m.model + ` · the model hears the last ${m.context} tokens of the duet`;
        $("download").href = m.midi;
        $("attention").href = m.attention;
        $("download").hidden = $("attention").hidden = false;
        $("state").textContent = "play: the model answers when you pause";
        send({ type: "settings", ...settings() });
        document.body.dataset.ready = "1";
      } else if (m.type === "on" || m.type === "off") {
        onNote(m);
      } else if (m.type === "end") {
        const a = current;
        if (a && a.k === m.answer && !a.interrupted) {
          a.done = true;
          a.end = m.t;
          record(a.k, { seconds: m.t, serverMs: m.serverMs });
          a.timers.push(setTimeout(() => { $("state").textContent = "your turn"; }, Math.max(0, at(a, m.t) - performance.now())));
        }
      } else if (m.type === "cut") {
        record(m.answer, { interrupted: true, cutAt: m.t });
      } else if (m.type === "error") {
        $("error").textContent = m.error;
        $("error").hidden = false;
        if (current && current.k === null) current = null; // the answer was refused
      }
    };
    ws.onclose = () => {
      $("state").textContent = "disconnected: reload the page to start a new duet (the download still works)";
      document.body.dataset.closed = "1";
    };
  }
  connect();
})();
