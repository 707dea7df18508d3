// The infill page: a piece's roll, a span marked by dragging, and the alternatives the model writes.
"use strict";
const VIEW_SECONDS = 30, W = 1000, H = 260, NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const state = { notes: [], seconds: 0, view: 0, start: null, end: null, audio: null };

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// notes [pitch, start, end, velocity] drawn on `svg` for times t0..t1; `isNew(note)` colours the new ones
function drawNotes(svg, notes, t0, t1, width, height, isNew) {
  svg.replaceChildren();
  const shown = notes.filter((n) => n[2] > t0 && n[1] < t1);
  const lo = Math.min(...shown.map((n) => n[0]), 60) - 2, hi = Math.max(...shown.map((n) => n[0]), 72) + 2;
  const x = (t) => ((t - t0) / (t1 - t0)) * width, y = (p) => height - ((p - lo + 1) / (hi - lo + 1)) * height;
  shown.forEach((n, i) => {
    const r = el("rect", { x: x(n[1]), y: y(n[0]), width: Math.max(1, x(n[2]) - x(n[1])),
      height: Math.max(1, height / (hi - lo + 1)), class: "note" + (isNew && isNew(n) ? " new" : "") }, svg);
    r.dataset.i = i;
  });
  return x;
}

function drawRoll() {
  const t0 = state.view, t1 = t0 + VIEW_SECONDS, svg = $("roll");
  const x = drawNotes(svg, state.notes, t0, t1, W, H);
  if (state.start !== null && state.end !== null) {
    const a = Math.min(state.start, state.end), b = Math.max(state.start, state.end);
    el("rect", { x: x(a), y: 0, width: Math.max(1, x(b) - x(a)), height: H, class: "span", id: "span" }, svg);
  }
}

function timeAt(event) {
  const box = $("roll").getBoundingClientRect();
  const t = state.view + ((event.clientX - box.left) / box.width) * VIEW_SECONDS;
  return Math.round(Math.min(Math.max(t, 0), state.seconds) * 100) / 100;
}

function setSpan(a, b) {
  state.start = Math.min(a, b); state.end = Math.max(a, b);
  $("start").value = state.start; $("end").value = state.end;
  drawRoll();
}

async function loadPiece(name) {
  const r = await fetch("/api/infill/pieces/" + encodeURIComponent(name));
  const body = await r.json();
  state.notes = body.notes; state.seconds = body.seconds; state.view = 0; state.start = state.end = null;
  $("view").max = Math.max(0, Math.floor(body.seconds - VIEW_SECONDS)); $("view").value = 0;
  $("generate").disabled = !body.canInfill;
  $("status").textContent = body.canInfill ? "" : "this model cannot infill (it has no fill-in-the-middle tokens)";
  drawRoll();
}

// a small synth: each note a triangle wave with a soft attack and release, scheduled at once
function play(card, sample, from, to) {
  const ctx = state.audio || (state.audio = new AudioContext());
  ctx.resume();
  const now = ctx.currentTime + 0.05;
  let n = 0;
  for (const [p, s, e, v] of sample.notes) {
    const a = Math.max(s, from), b = Math.min(e, to);
    if (b <= a) continue;
    const osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.type = "triangle"; osc.frequency.value = 440 * Math.pow(2, (p - 69) / 12);
    gain.gain.setValueAtTime(0, now + a - from);
    gain.gain.linearRampToValueAtTime(0.12 * v / 127, now + a - from + 0.01);
    gain.gain.linearRampToValueAtTime(0, now + b - from + 0.05);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now + a - from); osc.stop(now + b - from + 0.06);
    n++;
  }
  card.dataset.playing = "1"; card.dataset.scheduled = n;
  setTimeout(() => { card.dataset.playing = "0"; }, (to - from) * 1000 + 100);
}

function showAlternatives(result) {
  const box = $("alternatives");
  box.replaceChildren();
  result.samples.forEach((sample, k) => {
    const card = document.createElement("div");
    card.className = "alt panel"; card.dataset.k = k + 1;
    const head = document.createElement("div");
    head.textContent = `alternative ${k + 1} `;
    const button = document.createElement("button");
    button.type = "button"; button.className = "play"; button.textContent = "Play";
    button.onclick = () => play(card, sample, result.from, result.to);
    const link = document.createElement("a");
    link.className = "download"; link.href = sample.midi; link.download = ""; link.textContent = "Download MIDI";
    const view = document.createElement("a");
    view.className = "attention"; view.href = sample.attention; view.target = "_blank"; view.textContent = "Attention";
    head.append(button, " ", link, " ", view);
    const svg = el("svg", { viewBox: "0 0 1000 120", preserveAspectRatio: "none" });
    drawNotes(svg, sample.notes, result.from, result.to, 1000, 120,
      (n) => n[1] >= result.start && n[1] < result.end);
    card.append(head, svg);
    box.appendChild(card);
  });
}

async function generate() {
  const start = parseFloat($("start").value), end = parseFloat($("end").value);
  $("status").textContent = "writing…"; $("generate").disabled = true;
  try {
    const r = await fetch("/api/infill", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ piece: $("piece").value, start, end,
        numSamples: parseInt($("num").value, 10), seed: parseInt($("seed").value, 10) }) });
    const body = await r.json();
    if (!r.ok) { $("status").textContent = body.error; return; }
    $("status").textContent = `${body.samples.length} alternatives for ${start}-${end} s`;
    showAlternatives(body);
  } catch (e) {
    $("status").textContent = "the server did not answer: " + e;
  } finally {
    $("generate").disabled = false;
  }
}

async function init() {
  const info = await (await fetch("/api/info")).json();
  for (const p of info.pieces) $("piece").add(new Option(`${p.name} (${p.seconds} s)`, p.name));
  $("piece").onchange = () => loadPiece($("piece").value);
  $("view").oninput = () => { state.view = +$("view").value; drawRoll(); };
  let anchor = null;
  $("roll").addEventListener("mousedown", (e) => { anchor = timeAt(e); setSpan(anchor, anchor); });
  $("roll").addEventListener("mousemove", (e) => { if (anchor !== null) setSpan(anchor, timeAt(e)); });
  window.addEventListener("mouseup", () => { anchor = null; });
  for (const id of ["start", "end"]) $(id).onchange = () => setSpan(+$("start").value, +$("end").value);
  $("generate").onclick = generate;
  if (info.pieces.length) await loadPiece(info.pieces[0].name);
  document.body.dataset.ready = "1";
}
init();
