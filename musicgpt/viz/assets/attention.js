// Attention page: arcs from the chosen item (a note, or a text token) to the earlier items it
// attends to, and a heatmap of one head. The piano roll / token row is static SVG written by
// musicgpt/viz/html.py; this script only reads the embedded data and draws on top of it. A music
// page also plays its notes (player.js, inlined before this script): the playhead crosses the roll,
// the sounding notes light up, and the arcs follow the note struck last.
"use strict";
(function () {
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("attention-data").textContent);
  const $ = (id) => document.getElementById(id);
  const svg = $("roll");
  const SVG_NS = svg.namespaceURI; // read from the page: no namespace URL written in the script
  const PITCH = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"];

  // --- data: base64 little-endian arrays -> typed arrays ----------------------------------------
  function bytes(b64) {
    const s = atob(b64);
    const u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function halfToFloat(u16) {
    const out = new Float32Array(u16.length);
    for (let i = 0; i < u16.length; i++) {
      const h = u16[i], e = (h >> 10) & 31, m = h & 1023;
      const v = e === 0 ? m * 2 ** -24 : e === 31 ? Infinity : (1 + m / 1024) * 2 ** (e - 15);
      out[i] = h & 0x8000 ? -v : v;
    }
    return out;
  }
  // A compact matrix stack: for (layer, head, row) the k strongest keys, strongest first.
  function sparse(c) {
    const ib = bytes(c.index).buffer;
    const idx = c.indexBytes === 2 ? new Uint16Array(ib) : new Uint32Array(ib);
    let w;
    if (c.dtype === "uint8") {
      const q = bytes(c.weight), scale = new Float32Array(bytes(c.scale).buffer);
      w = new Float32Array(q.length);
      for (let i = 0; i < q.length; i++) w[i] = (q[i] / 255) * scale[(i / c.k) | 0];
    } else {
      w = halfToFloat(new Uint16Array(bytes(c.weight).buffer));
    }
    return { k: c.k, rows: c.rows, idx, w };
  }
  const tok = sparse(D.tok);
  const items = D.items ? sparse(D.items) : tok; // music: note x note; text: the tokens themselves
  const noteShare = D.noteShare ? bytes(D.noteShare) : null; // (layer, head, note), 255 = all of it
  const rowStart = (S, l, h, r) => ((l * D.nHead + h) * S.rows + r) * S.k;

  const music = D.mode === "music";
  const els = [];
  document.querySelectorAll("[data-i]").forEach((e) => { els[+e.dataset.i] = e; });
  const tokenOfItem = (i) => (music ? D.notes.onToken[i] : i);
  const itemOfToken = new Map(els.map((_, i) => [tokenOfItem(i), i]));
  const itemName = (i) => {
    if (!music) return "“" + D.tokens[i] + "” (token " + i + ")";
    const p = D.notes.pitch[i];
    return PITCH[p % 12] + (Math.floor(p / 12) - 1) + " at " + D.notes.start[i].toFixed(2) + " s";
  };

  // --- state, kept in the URL hash so that a view can be linked (and tests can choose a note) --
  const KEY = music ? "note" : "token";
  const state = {
    layer: D.init.layer, heads: new Set(D.init.heads), item: D.init.item,
    threshold: 0, perHead: Math.min(D.init.perHead, items.k), hm: D.init.hmHead,
  };
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const int = (name, lo, hi) => {
      const v = parseInt(p.get(name), 10);
      return Number.isInteger(v) && v >= lo && v < hi ? v : null;
    };
    const i = int(KEY, 0, els.length); if (i !== null) state.item = i;
    const l = int("layer", 0, D.nLayer); if (l !== null) state.layer = l;
    const h = int("hm", 0, D.nHead); if (h !== null) state.hm = h;
    const k = int("k", 1, items.k + 1); if (k !== null) state.perHead = k;
    const t = parseFloat(p.get("t")); if (t >= 0 && t <= 1) state.threshold = t;
    if (p.has("heads")) {
      const hs = p.get("heads").split(",").map(Number).filter((x) => Number.isInteger(x) && x >= 0 && x < D.nHead);
      state.heads = new Set(hs);
    }
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (state.item !== null) p.set(KEY, state.item);
    p.set("layer", state.layer);
    p.set("heads", [...state.heads].sort((a, b) => a - b).join(","));
    p.set("hm", state.hm);
    p.set("k", state.perHead);
    if (state.threshold > 0) p.set("t", state.threshold);
    try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* some file: URLs refuse */ }
  }

  // --- controls ---------------------------------------------------------------------------------
  // The threshold slider is logarithmic: 0 = no threshold, then 1e-4 .. 1.
  const sliderToWeight = (v) => (v <= 0 ? 0 : 10 ** (-4 + (4 * v) / 100));
  const weightToSlider = (w) => (w <= 0 ? 0 : Math.round(((Math.log10(w) + 4) * 100) / 4));
  function buildControls() {
    $("per-head").max = items.k;
    for (let l = 0; l < D.nLayer; l++) $("layer").add(new Option(String(l), String(l)));
    D.headColors.forEach((c, h) => {
      const lab = document.createElement("label");
      lab.innerHTML = '<input type="checkbox"><span class="swatch"></span>head ' + h;
      lab.querySelector(".swatch").style.background = c;
      const box = lab.querySelector("input");
      box.dataset.head = h;
      box.addEventListener("change", () => {
        if (box.checked) state.heads.add(h); else state.heads.delete(h);
        update();
      });
      $("heads").appendChild(lab);
      $("hm-head").add(new Option(String(h), String(h)));
    });
    $("layer").addEventListener("change", (e) => { state.layer = +e.target.value; update(); });
    $("hm-head").addEventListener("change", (e) => { state.hm = +e.target.value; update(); });
    $("threshold").addEventListener("input", (e) => { state.threshold = sliderToWeight(+e.target.value); update(); });
    $("per-head").addEventListener("change", (e) => {
      state.perHead = Math.max(1, Math.min(items.k, +e.target.value || 1)); update();
    });
    els.forEach((e, i) => e.addEventListener("click", () => choose(i, true)));
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || state.item === null) return;
      if (e.key === "ArrowLeft" && state.item > 0) choose(state.item - 1, true);
      if (e.key === "ArrowRight" && state.item < els.length - 1) choose(state.item + 1, true);
    });
    window.addEventListener("hashchange", () => { readHash(); update(); });
  }
  function syncControls() {
    $("layer").value = state.layer;
    $("hm-head").value = state.hm;
    $("hm-layer").textContent = state.layer;
    $("per-head").value = state.perHead;
    $("threshold").value = weightToSlider(state.threshold);
    $("threshold-out").textContent = state.threshold > 0 ? state.threshold.toPrecision(2) : "0";
    document.querySelectorAll("#heads input").forEach((b) => { b.checked = state.heads.has(+b.dataset.head); });
  }
  // A note chosen by hand also moves the playhead to it (playback goes on from there).
  function choose(i, byHand) {
    state.item = i;
    update();
    if (byHand && player) player.seekTo(i);
  }

  // --- arcs -------------------------------------------------------------------------------------
  const anchor = (i) => [+els[i].dataset.cx, +els[i].dataset.cy];
  function svgEl(name, attrs, parent) {
    const e = document.createElementNS(SVG_NS, name);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    parent.appendChild(e);
    return e;
  }
  function arcPath(x1, y1, x2, y2) {
    // A quadratic curve bowing upwards; its peak (halfway to the control point) stays inside.
    const top = Math.min(y1, y2), h = Math.min(Math.abs(x2 - x1) * 0.35 + 14, 170);
    const cy = Math.max(top - 2 * h, 8 - top);
    return "M" + x1 + " " + y1 + " Q" + (x1 + x2) / 2 + " " + cy + " " + x2 + " " + y2;
  }
  // The strongest keys of `item` for every shown head, above the threshold, itself left out.
  function strongest(i) {
    const out = [];
    for (const h of state.heads) {
      const a = rowStart(items, state.layer, h, i);
      let n = 0;
      for (let e = a; e < a + items.k && n < state.perHead; e++) {
        const w = items.w[e], j = items.idx[e];
        if (w <= 0 || w < state.threshold) break; // strongest first: the rest are weaker
        if (j === i) continue;
        out.push({ h, j, w });
        n++;
      }
    }
    return out.sort((a, b) => a.w - b.w); // weakest first, so the strongest are drawn on top
  }
  function drawArcs() {
    const g = $("arcs");
    g.textContent = "";
    els.forEach((e, i) => e.classList.toggle("selected", i === state.item));
    const arcs = state.item === null ? [] : strongest(state.item);
    const wmax = arcs.reduce((m, a) => Math.max(m, a.w), 0);
    if (arcs.length) {
      const [xq, yq] = anchor(state.item);
      for (const a of arcs) {
        const [xk, yk] = anchor(a.j), color = D.headColors[a.h];
        const p = svgEl("path", {
          class: "arc", d: arcPath(xk, yk, xq, yq), stroke: color,
          "stroke-width": (0.8 + (5 * a.w) / wmax).toFixed(2), "stroke-opacity": 0.75,
        }, g);
        svgEl("title", {}, p).textContent = "head " + a.h + " → " + itemName(a.j) + ": " + a.w.toFixed(4);
        svgEl("circle", { class: "end", cx: xk, cy: yk, r: 3, fill: color }, g);
      }
      arcs.slice(-3).forEach((a, n) => { // the three strongest: their rank (as in the list) and weight
        const [xk, yk] = anchor(a.j), rank = Math.min(3, arcs.length) - n;
        const t = svgEl("text", { class: "label", x: xk + 4, y: yk - 6 - 12 * (rank - 1), fill: D.headColors[a.h] }, g);
        t.textContent = rank + ": " + a.w.toFixed(3);
      });
    }
    document.body.dataset.arcs = arcs.length; // read by the browser test
    describe(arcs);
  }
  function describe(arcs) {
    const list = $("sel-list");
    list.textContent = "";
    if (state.item === null) return;
    $("sel-title").textContent = (music ? "note " + state.item + ": " : "") + itemName(state.item) +
      ", layer " + state.layer;
    const share = noteShare ? [...state.heads].sort((a, b) => a - b).map((h) =>
      "head " + h + " " + Math.round((100 * noteShare[(state.layer * D.nHead + h) * els.length + state.item]) / 255) + "%") : [];
    $("sel-share").textContent = share.length ? "share of its attention on note onsets: " + share.join(", ") : "";
    arcs.slice().reverse().slice(0, 12).forEach((a) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="swatch"></span> ';
      li.firstChild.style.background = D.headColors[a.h];
      li.append("head " + a.h + "  " + a.w.toFixed(4) + "  → " + itemName(a.j));
      list.appendChild(li);
    });
  }

  // --- heatmap ----------------------------------------------------------------------------------
  const RAMP = [[15, 17, 32], [70, 30, 110], [190, 55, 90], [250, 150, 50], [252, 250, 190]]; // magma-like
  function color(v) {
    const x = Math.min(Math.max(v, 0), 1) * (RAMP.length - 1), i = Math.min(Math.floor(x), RAMP.length - 2), f = x - i;
    return RAMP[i].map((c, n) => c + f * (RAMP[i + 1][n] - c));
  }
  const hm = $("heatmap"), T = D.nTokens, S = Math.min(T, 512);
  hm.width = hm.height = S;
  function drawHeatmap() {
    const ctx = hm.getContext("2d"), cell = new Float32Array(S * S);
    for (let q = 0; q < T; q++) {
      const a = rowStart(tok, state.layer, state.hm, q), y = ((q * S) / T) | 0;
      for (let e = a; e < a + tok.k; e++) {
        const w = tok.w[e];
        if (w <= 0) break;
        const o = y * S + (((tok.idx[e] * S) / T) | 0);
        if (w > cell[o]) cell[o] = w; // several tokens share a pixel: show the strongest
      }
    }
    const img = ctx.createImageData(S, S);
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const o = y * S + x, w = cell[o];
        const c = w > 0 ? color((Math.log10(w) + 4) / 4) : x > y ? [44, 48, 56] : [15, 17, 32];
        img.data.set([c[0], c[1], c[2], 255], 4 * o);
      }
    }
    ctx.putImageData(img, 0, 0);
    if (state.item !== null) { // the chosen query's row
      const y = (tokenOfItem(state.item) * S) / T;
      ctx.fillStyle = "rgba(255, 209, 102, 0.55)";
      ctx.fillRect(0, Math.floor(y), S, Math.max(1, S / T));
    }
  }
  function cellAt(ev) {
    const r = hm.getBoundingClientRect();
    const q = Math.min(T - 1, Math.floor(((ev.clientY - r.top) / r.height) * T));
    const k = Math.min(T - 1, Math.floor(((ev.clientX - r.left) / r.width) * T));
    return [Math.max(q, 0), Math.max(k, 0)];
  }
  hm.addEventListener("mousemove", (ev) => {
    const [q, k] = cellAt(ev), a = rowStart(tok, state.layer, state.hm, q);
    let w = null;
    for (let e = a; e < a + tok.k; e++) if (tok.idx[e] === k && tok.w[e] > 0) w = tok.w[e];
    $("hm-info").textContent = "query " + q + " " + D.tokens[q] + " → key " + k + " " + D.tokens[k] + ": " +
      (k > q ? "masked" : w === null ? "below the stored top " + tok.k : w.toFixed(4));
  });
  hm.addEventListener("click", (ev) => {
    const q = cellAt(ev)[0];
    if (itemOfToken.has(q)) choose(itemOfToken.get(q), true);
    else $("hm-info").textContent = "token " + q + " (" + D.tokens[q] + ") starts no note; the arcs are between notes";
  });

  // --- playback (music) --------------------------------------------------------------------------
  function playback() {
    if (!music || !window.MusicGPTPlayer || !$("play")) return null;
    const head = $("playhead"), view = $("view");
    const t0 = +svg.dataset.t0, pps = +svg.dataset.pps, x0 = +svg.dataset.x0;
    let lit = [], struck = -1;
    const p = new MusicGPTPlayer.Player(D.notes, {
      from: t0, to: +svg.dataset.t1, onTick: show, onStop: (t) => { show(t); button(); },
    });
    function show(t) {
      const x = x0 + (t - t0) * pps;
      head.setAttribute("x1", x.toFixed(1));
      head.setAttribute("x2", x.toFixed(1));
      const now = p.sounding(t);
      lit.forEach((i) => els[i].classList.remove("playing"));
      now.on.forEach((i) => els[i].classList.add("playing"));
      lit = now.on;
      if (p.playing && now.last !== struck) {
        struck = now.last;
        if (struck >= 0) { state.item = struck; update(); } // its arcs, as it sounds
      }
      if (p.playing && (x < view.scrollLeft + 40 || x > view.scrollLeft + view.clientWidth - 40)) {
        view.scrollLeft = x - 80; // keep the playhead in sight
      }
      $("clock").textContent = t.toFixed(2) + " s";
      document.body.dataset.playhead = t; // read by the browser test
    }
    function button() {
      $("play").innerHTML = p.playing ? "&#10073;&#10073; pause" : "&#9654; play";
      document.body.dataset.playing = p.playing ? "1" : "0";
    }
    function toggle() { p.toggle(); button(); }
    $("play").addEventListener("click", toggle);
    document.addEventListener("keydown", (e) => {
      if (e.key !== " " || ["INPUT", "SELECT", "BUTTON", "TEXTAREA"].includes(e.target.tagName)) return;
      e.preventDefault(); // the space bar plays; it does not scroll the page
      toggle();
    });
    p.seekTo = (i) => { struck = p.sounding(D.notes.start[i]).last; p.seek(D.notes.start[i]); };
    document.body.dataset.playing = "0";
    return p;
  }

  function update() {
    syncControls();
    drawArcs();
    drawHeatmap();
    writeHash();
  }
  const player = playback();
  buildControls();
  readHash();
  update();
  document.body.dataset.renderMs = Math.round(performance.now() - t0); // read by tests and docs
  if (state.item !== null && els[state.item].scrollIntoView) {
    els[state.item].scrollIntoView({ block: "nearest", inline: "center" });
  }
})();
