// Reading page of a cxr_monai observer study. The server decides every showing; this page draws the pixels with
// the reader's window/level, measures the response time (pauses excluded) and sends each answer at once. An answer
// not yet acknowledged stays in localStorage and is sent again on reload, so a stopped server or browser loses none.
"use strict";

const body = document.body;
const pendingKey = "cxr-monai-study-pending:" + location.host;
const slots = [...document.querySelectorAll("canvas[data-slot]")];
const status = document.getElementById("status");
let state = null;            // the server's /api/state
let images = {};             // slot -> {pixels: Uint16Array, width, height}
let view = null;             // shared window {center, width} over both images of a pair
let shownAt = 0, pausedAt = 0, pausedTotal = 0;

function setState(name) { body.dataset.state = name; }

function showProgress() {
  document.getElementById("progress").max = state.total;
  document.getElementById("progress").value = state.answered;
  document.getElementById("progress-text").textContent = `${state.answered} / ${state.total}`;
  body.dataset.presentation = state.presentation === null ? "" : String(state.presentation);
  body.dataset.answered = String(state.answered);
}

async function fetchState() {
  const response = await fetch("api/state", {cache: "no-store"});
  if (response.status === 401) { location.reload(); throw new Error("logged out"); }
  if (!response.ok) throw new Error(`state: HTTP ${response.status}`);
  state = await response.json();
  showProgress();
}

async function fetchImage(slot) {
  const response = await fetch(`api/image/${state.presentation}/${slot}`, {cache: "no-store"});
  if (!response.ok) throw new Error(`image ${slot}: HTTP ${response.status}`);
  const width = Number(response.headers.get("X-Image-Width"));
  const height = Number(response.headers.get("X-Image-Height"));
  const pixels = new Uint16Array(await response.arrayBuffer());
  if (pixels.length !== width * height) throw new Error(`image ${slot}: ${pixels.length} pixels for ${width}x${height}`);
  return {pixels, width, height};
}

function defaultWindow() {
  let low = 65535, high = 0;
  for (const image of Object.values(images)) {
    for (const value of image.pixels) { if (value < low) low = value; if (value > high) high = value; }
  }
  if (high <= low) high = low + 1;
  return {center: (low + high) / 2, width: high - low};
}

function draw() {
  const low = view.center - view.width / 2, scale = 255 / view.width;
  for (const canvas of slots) {
    const image = images[canvas.dataset.slot];
    if (!image) continue;
    if (canvas.width !== image.width || canvas.height !== image.height) {  // resizing clears and reallocates
      canvas.width = image.width;
      canvas.height = image.height;
    }
    const context = canvas.getContext("2d");
    const data = context.createImageData(image.width, image.height);
    const rgba = data.data;
    for (let i = 0, j = 0; i < image.pixels.length; i++, j += 4) {
      const grey = Math.max(0, Math.min(255, (image.pixels[i] - low) * scale));
      rgba[j] = rgba[j + 1] = rgba[j + 2] = grey;
      rgba[j + 3] = 255;
    }
    context.putImageData(data, 0, 0);
  }
  body.dataset.window = `${Math.round(view.center)}/${Math.round(view.width)}`;
}

async function showNext() {
  setState("loading");
  await fetchState();
  if (state.done) {
    for (const canvas of slots) canvas.width = canvas.height = 0;
    document.getElementById("stage").hidden = true;
    document.querySelector(".answers").hidden = true;
    document.getElementById("done").hidden = false;
    setState("done");
    return;
  }
  const loaded = {};
  for (const slot of state.slots) loaded[slot] = await fetchImage(slot);
  images = loaded;
  view = defaultWindow();
  draw();
  shownAt = performance.now();
  pausedTotal = 0;
  setState(pausedAt ? "paused" : "ready");
}

function pending() { return JSON.parse(localStorage.getItem(pendingKey) || "null"); }

async function send(answer) {
  while (true) {
    try {
      const response = await fetch("api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify(answer)});
      if (response.ok || response.status === 409) {  // 409: already stored (or out of date): the server knows best
        localStorage.removeItem(pendingKey);
        status.textContent = response.ok ? "Saved." : "";
        return;
      }
      if (response.status === 401) { location.reload(); return; }
      status.textContent = `Not saved (HTTP ${response.status}); retrying...`;
    } catch (error) {
      status.textContent = "Not saved yet: the server cannot be reached; retrying...";
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function answer(choice) {
  if (body.dataset.state !== "ready" || !state.choices.includes(choice)) return;
  setState("saving");
  const answer = {presentation: state.presentation, choice,
                  response_ms: Math.max(0, performance.now() - shownAt - pausedTotal)};
  localStorage.setItem(pendingKey, JSON.stringify(answer));
  await send(answer);
  await showNext();
}

function togglePause() {
  const overlay = document.getElementById("paused");
  if (body.dataset.state === "ready") {
    pausedAt = performance.now();
    overlay.hidden = false;
    setState("paused");
  } else if (body.dataset.state === "paused") {
    pausedTotal += performance.now() - pausedAt;
    pausedAt = 0;
    overlay.hidden = true;
    setState("ready");
  }
}

function toggleFit() {
  const stage = document.getElementById("stage");
  stage.classList.toggle("fit");
  stage.classList.toggle("full");
}

let drag = null, frame = 0;
for (const canvas of slots) {
  canvas.addEventListener("mousedown", (event) => {
    if (view) drag = {x: event.clientX, y: event.clientY, center: view.center, width: view.width};
    event.preventDefault();
  });
}
window.addEventListener("mousemove", (event) => {
  if (!drag || body.dataset.state !== "ready") return;
  const step = drag.width / 200;  // 200 px of mouse travel doubles or halves nothing abruptly
  view = {center: drag.center + (event.clientY - drag.y) * step,
          width: Math.max(1, drag.width + (event.clientX - drag.x) * step)};
  // one redraw per display frame, however many mouse events arrive: a redraw maps every pixel of both images
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
});
window.addEventListener("mouseup", () => { drag = null; });

const keys = {ArrowLeft: () => answer("left"), ArrowRight: () => answer("right"),
              r: () => answer("real"), s: () => answer("synthetic"), p: togglePause, f: toggleFit,
              0: () => { if (view && body.dataset.state === "ready") { view = defaultWindow(); draw(); } }};
window.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const action = keys[event.key] || keys[event.key.toLowerCase()];
  if (action) { event.preventDefault(); action(); }
});
for (const button of document.querySelectorAll("button.answer")) {
  button.addEventListener("click", () => answer(button.dataset.choice));
}
document.getElementById("pause").addEventListener("click", togglePause);
document.getElementById("resume").addEventListener("click", togglePause);
document.getElementById("fit").addEventListener("click", toggleFit);
document.getElementById("reset-window").addEventListener("click", () => keys[0]());

(async () => {
  const unsent = pending();
  if (unsent) { status.textContent = "Sending the last answer..."; await send(unsent); }
  await showNext();
})().catch((error) => { status.textContent = `Error: ${error.message}. Reload the page to continue.`; setState("error"); });
