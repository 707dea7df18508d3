// The page's fine-tuning panel (serve/finetune.py): upload MIDI files or a zip, start, watch the
// validation loss, stop (the best model so far stays), then switch the app to the new model.
// Generation keeps working meanwhile; the server runs one fine-tune at a time.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("finetune-form");
  const POLL_MS = 500;
  let polling = false;

  function error(message) {
    $("ft-error").textContent = message;
    $("ft-error").hidden = !message;
  }
  async function json(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) throw new Error(body.error || "the server answered " + response.status);
    return body;
  }
  const clock = (s) => Math.floor(s / 60) + ":" + String(Math.round(s % 60)).padStart(2, "0");

  function curve(history) {
    const svg = $("ft-curve");
    svg.hidden = history.length === 0;
    svg.textContent = "";
    if (!history.length) return;
    const ns = svg.namespaceURI, W = 400, H = 90, P = 14;
    const losses = history.map((h) => h.val_loss), steps = history.map((h) => h.step);
    const lo = Math.min(...losses), hi = Math.max(...losses), last = Math.max(...steps, 1);
    const x = (s) => P + ((W - 2 * P) * s) / last;
    const y = (v) => (hi === lo ? H / 2 : P + ((H - 2 * P) * (hi - v)) / (hi - lo));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", history.map((h) => x(h.step) + "," + y(h.val_loss)).join(" "));
    svg.appendChild(line);
    for (const h of history) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", x(h.step)); c.setAttribute("cy", y(h.val_loss)); c.setAttribute("r", 2.5);
      svg.appendChild(c);
    }
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", P); label.setAttribute("y", 10);
    label.textContent = "validation loss " + hi.toFixed(3) + " → " + losses[losses.length - 1].toFixed(3);
    svg.appendChild(label);
  }

  function show(st) {
    document.body.dataset.finetune = st.state; // read by the browser test
    const busy = ["building", "training", "stopping"].includes(st.state);
    $("ft-start").disabled = busy;
    $("ft-stop").hidden = !(st.state === "training" || st.state === "building");
    $("ft-use").hidden = !(st.state === "done" && !st.used);
    curve(st.history || []);
    let text = "";
    if (st.state === "building") text = "reading " + st.files + " file(s)…";
    if (st.state === "training" || st.state === "stopping") {
      text = (st.state === "stopping" ? "stopping after this step · " : "") + "step " + st.step +
        (st.trainLoss !== null ? ", loss " + st.trainLoss.toFixed(3) : "") +
        (st.best ? ", best validation " + st.best.val_loss.toFixed(3) : "") +
        " · " + clock(st.elapsed) + " elapsed" + (st.left !== null ? ", at most " + clock(st.left) + " left" : "");
    }
    if (st.state === "done") {
      const h = st.history, gain = h.length ? h[0].val_loss - st.best.val_loss : 0;
      text = "done (" + st.stopped + "): validation loss " + h[0].val_loss.toFixed(3) + " → " +
        st.best.val_loss.toFixed(3) + " (" + (gain >= 0 ? "−" : "+") + Math.abs(gain).toFixed(3) + "); model in " + st.modelDir +
        (st.used ? " · in use" : "");
    }
    if (st.state === "failed") text = "";
    error(st.state === "failed" ? "fine-tuning failed: " + st.error : "");
    $("ft-status").textContent = text;
    if (st.model) $("about").textContent = st.model;
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      for (;;) {
        const st = await json(await fetch("/api/finetune"));
        show(st);
        if (!["building", "training", "stopping"].includes(st.state)) return;
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    } catch (e) {
      error(e.message);
    } finally {
      polling = false;
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error("");
    if (!$("ft-files").files.length) { error("choose a few MIDI files (or a zip of them) first"); return; }
    const data = new FormData(form);
    $("ft-start").disabled = true;
    try {
      await json(await fetch("/api/finetune", { method: "POST", body: data }));
      poll();
    } catch (e) {
      error(e.message);
      $("ft-start").disabled = false;
    }
  });
  $("ft-stop").addEventListener("click", async () => {
    try { show(await json(await fetch("/api/finetune/stop", { method: "POST" }))); } catch (e) { error(e.message); }
  });
  $("ft-use").addEventListener("click", async () => {
    $("ft-use").disabled = true;
    try {
      const r = await json(await fetch("/api/finetune/use", { method: "POST" }));
      $("about").textContent = r.model;
      document.body.dataset.model = "finetuned";
    } catch (e) {
      error(e.message);
    } finally {
      $("ft-use").disabled = false;
      poll();
    }
  });

  fetch("/api/info").then(json).then((info) => {
    if (!info.finetune) return; // an app made without a checkpoint path offers no fine-tuning
    form.hidden = false;
    poll();
  }).catch(() => { /* app.js shows that error */ });
})();
