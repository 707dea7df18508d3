// The `musicgpt serve` page: send a prompt and sampling settings, follow the job, then draw each
// sample's piano roll (prompt and continuation in two colours) and play it with the synth of
// player.js, the one the attention page uses. The server checks every value; this page only
// shows its messages.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const probe = document.createElement("div");
  probe.innerHTML = "<svg></svg>";
  const SVG_NS = probe.firstChild.namespaceURI; // read from the browser: no URL written here
  const POLL_MS = 300;
  const form = $("generate-form");
  let info = null;

  // --- the form ---------------------------------------------------------------------------------
  function setUp(data) {
    info = data;
    $("about").textContent = data.model;
    $("max-upload").textContent = (data.maxUploadBytes / 2 ** 20).toFixed(0) + " MB";
    for (const p of data.pieces) {
      const s = Math.round(p.seconds);
      $("piece").add(new Option(p.name + "  (" + Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0") + ")", p.name));
    }
    for (const [name, f] of Object.entries(data.fields)) {
      const input = form.elements[name];
      input.min = f.min;
      input.max = f.max;
      if (f.default !== null) input.value = f.default;
      input.title = f.label + ": " + f.min + " to " + f.max;
    }
    document.body.dataset.ready = "1"; // read by the browser test
  }
  $("midi").addEventListener("change", () => {
    const file = $("midi").files[0];
    $("piece").disabled = !!file;
    $("upload-hint").textContent = file ? "the upload is the prompt (clear it to use a bundled piece)" : "";
  });

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }
  function status(text, fraction) {
    $("status").textContent = text;
    $("progress").hidden = fraction === null;
    if (fraction !== null) $("progress").value = fraction;
  }
  async function json(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON: keep the status line */ }
    if (!response.ok) throw new Error(body.error || "the server answered " + response.status);
    return body;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("");
    const data = new FormData(form);
    if (!$("midi").files.length) data.delete("midi");
    $("generate").disabled = true;
    document.body.dataset.state = "sending";
    status("sending…", null);
    try {
      const job = await json(await fetch("/api/jobs", { method: "POST", body: data }));
      await follow(job.id);
    } catch (e) {
      document.body.dataset.state = "error";
      status("", null);
      showError(e.message === "Failed to fetch" ? "the server did not answer: is musicgpt serve running?" : e.message);
    } finally {
      $("generate").disabled = false;
    }
  });

  async function follow(id) {
    for (;;) {
      const job = await json(await fetch("/api/jobs/" + id));
      document.body.dataset.state = job.state;
      if (job.state === "queued") status("waiting: " + job.position + " ahead", 0);
      if (job.state === "running") {
        status("generating: " + job.doneSeconds.toFixed(1) + " of " + job.seconds + " s", job.doneSeconds / job.seconds);
      }
      if (job.state === "failed") throw new Error(job.error);
      if (job.state === "done") {
        const n = job.samples.length;
        status(n + (n === 1 ? " sample" : " samples") + " of " + job.label + " in " + job.elapsed.toFixed(1) + " s", null);
        showSamples(job);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  // --- samples ----------------------------------------------------------------------------------
  function el(tag, attrs, parent, text) {
    const e = tag === "svg" || parent instanceof SVGElement
      ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function showSamples(job) {
    if (MusicGPTPlayer.Player.current) MusicGPTPlayer.Player.current.stop();
    const box = $("samples");
    box.textContent = "";
    job.samples.forEach((s, k) => box.appendChild(sampleCard(job, s, k + 1)));
  }

  function sampleCard(job, s, k) {
    const card = el("article", { class: "sample panel", "data-k": k });
    const head = el("div", { class: "sample-head" }, card);
    el("h2", {}, head, "sample " + k);
    const play = el("button", { type: "button", class: "play" }, head, "▶ play");
    const clock = el("output", { class: "clock" }, head, "0.0 s");
    el("a", { class: "download", href: s.midi, download: "" }, head, "download MIDI");
    el("a", { class: "attention", href: s.attention, target: "_blank", rel: "noopener" }, head, "attention view");
    const legend = el("span", { class: "legend" }, head);
    el("i", { class: "swatch prompt" }, legend);
    legend.append("prompt (to " + s.promptEnd.toFixed(1) + " s) ");
    el("i", { class: "swatch continuation" }, legend);
    legend.append("continuation (" + s.notes.pitch.filter((_, i) => !s.fromPrompt[i]).length + " notes)");
    if (s.copy) { // the copy report: the longest stretch of the model's training corpus
      el("p", { class: "copy" + (s.copy.flagged ? " flagged" : ""), "data-flagged": s.copy.flagged ? "1" : "0" }, card,
        "copy report: " + s.copy.line);
    }
    const roll = pianoRoll(s);
    card.appendChild(roll.svg);

    const player = new MusicGPTPlayer.Player(s.notes, {
      from: 0, to: s.end + 0.3,
      onTick: (t) => { roll.show(t, player.sounding(t).on); clock.textContent = t.toFixed(1) + " s"; card.dataset.playhead = t; },
      onStop: (t) => { roll.show(t, player.playing ? player.sounding(t).on : []); button(); },
    });
    const button = () => {
      play.textContent = player.playing ? "■ stop" : "▶ play";
      card.dataset.playing = player.playing ? "1" : "0";
    };
    play.addEventListener("click", () => {
      if (player.playing) player.stop(); else player.play();
      button();
    });
    roll.svg.addEventListener("click", (ev) => { player.seek(roll.timeAt(ev)); button(); }); // play from here
    card.dataset.playing = "0";
    return card;
  }

  // Time across, pitch up; drawn at the width the card will have (no stretched text).
  function pianoRoll(s) {
    const n = s.notes, W = Math.max(600, $("samples").clientWidth - 30), LEFT = 6, TOP = 6;
    const lo = Math.min(...n.pitch, 60) - 2, hi = Math.max(...n.pitch, 72) + 2;
    const rh = Math.max(2, Math.min(8, 200 / (hi - lo + 1)));
    const H = TOP + (hi - lo + 1) * rh + 16, end = Math.max(s.end, 1);
    const x = (t) => LEFT + (t * (W - 2 * LEFT)) / end;
    const y = (p) => TOP + (hi - p) * rh;
    const svg = el("svg", { class: "roll", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "piano roll" });
    el("rect", { class: "continuation-bg", x: x(s.promptEnd), y: TOP, width: Math.max(0, x(end) - x(s.promptEnd)), height: H - TOP - 16 }, svg);
    const step = [1, 2, 5, 10, 15, 30, 60].find((v) => (v * (W - 2 * LEFT)) / end >= 60) || 120;
    for (let t = 0; t <= end; t += step) {
      el("line", { class: "tick", x1: x(t), x2: x(t), y1: TOP, y2: H - 14 }, svg);
      el("text", { x: x(t) + 2, y: H - 3 }, svg, t + " s");
    }
    const rects = n.pitch.map((p, i) => el("rect", {
      class: "note " + (s.fromPrompt[i] ? "prompt" : "continuation"), "data-i": i,
      x: x(n.start[i]).toFixed(1), y: (y(p) + 0.5).toFixed(1),
      width: Math.max(x(n.end[i]) - x(n.start[i]), 1.5).toFixed(1), height: Math.max(rh - 1, 1.5),
      "fill-opacity": (0.35 + (0.65 * n.velocity[i]) / 127).toFixed(2),
    }, svg));
    el("line", { class: "boundary", x1: x(s.promptEnd), x2: x(s.promptEnd), y1: 0, y2: H - 14 }, svg);
    const head = el("line", { class: "playhead", x1: x(0), x2: x(0), y1: 0, y2: H - 14 }, svg);
    let lit = [];
    return {
      svg,
      show(t, on) {
        head.setAttribute("x1", x(t));
        head.setAttribute("x2", x(t));
        lit.forEach((i) => rects[i].classList.remove("on"));
        on.forEach((i) => rects[i].classList.add("on"));
        lit = on;
      },
      timeAt(ev) {
        const r = svg.getBoundingClientRect();
        return Math.max(0, (((ev.clientX - r.left) / r.width) * W - LEFT) / (W - 2 * LEFT)) * end;
      },
    };
  }

  fetch("/api/info").then(json).then(setUp).catch((e) => showError("cannot read the app's settings: " + e.message));
})();
